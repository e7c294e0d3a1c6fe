"""The micro part: criterion benches (dns/benches, jump/benches) with --quick.

Owns: part_micro (runs `cargo bench` for each and reads the median time
per case from its output).
Must not: start servers or write the report.
"""

from __future__ import annotations

import re
import subprocess

from .settings import ROOT, Settings
from .util import table


def part_micro(s: Settings):
    rows = []
    for package, bench in (("gatehouse-dns", "zones"), ("gatehouse-jump", "grants"), ("gatehouse-jump", "kex")):
        cmd = ["cargo", "bench", "-q", "-p", package, "--bench", bench, "--", "--quick"]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
        for m in re.finditer(
            r"^(\S[^\n]*?)\s*\n?\s+time:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", p.stdout, flags=re.M
        ):
            rows.append([f"`{package}` {bench}", m.group(1).strip(), m.group(2)])
    md = [
        "`cargo bench -p gatehouse-dns --bench zones -- --quick`, "
        "`cargo bench -p gatehouse-jump --bench grants -- --quick` and "
        "`cargo bench -p gatehouse-jump --bench kex -- --quick`; median time per call.",
        "",
        table(["bench", "case", "time"], rows),
    ]
    return "\n".join(md), {}
