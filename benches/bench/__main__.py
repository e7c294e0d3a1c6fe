"""The command line: `python3 -m bench [PART ...] [--quick] [--keep]
[--soak-minutes N] [--list]` (benches/run puts benches/ on the import path
and runs this).

Owns: the parts' names, titles and order (PARTS, ORDER, and EXTRA: parts
run only when named), the options, the loop that runs each part after
wait_quiet and keeps going when one fails, and the hidden modes the flood
and soak parts start their attackers with (`_flood PORT RATE SECONDS SOURCES`,
`_soak_attacks CONFIG`).
Must not: measure or format figures itself; the parts measure, report
formats and writes.
"""

from __future__ import annotations

import argparse
import sys
import time

from .dns import part_dns
from .fleet import part_fleet
from .flood import part_flood, run_flooder
from .logins import part_logins
from .memory import part_memory
from .kex import part_kex
from .micro import part_micro
from .procs import wait_quiet
from .report import OUT, machine, render, save, section
from .settings import GATEHOUSE, Settings
from .soak import part_soak, run_attacks
from .tunnel import part_tunnel
from .util import log

PARTS = {
    "dns": ("e. DNS: gatehouse vs dnsmasq, Knot and NSD (dnsperf)", part_dns),
    "tunnel": ("a. Tunnel throughput: `ssh -W`", lambda s: part_tunnel(s, "W")),
    "nc": ("b. Tunnel throughput: the `nc` exec form", lambda s: part_tunnel(s, "nc")),
    "logins": ("c. Logins per second", part_logins),
    "kex": ("c2. Logins per key exchange: the post-quantum hybrids vs curve25519", part_kex),
    "memory": ("d. Memory per idle authenticated connection", part_memory),
    "flood": ("f. Login flood from one address", part_flood),
    "micro": ("Micro-benchmarks (criterion)", part_micro),
    "soak": ("Soak: mixed logins, tunnels, DNS and attacks at once", part_soak),
    "fleet": ("g. Key + TOTP logins: local state vs a fleet's Redis", part_fleet),
}
ORDER = ["tunnel", "nc", "logins", "kex", "memory", "dns", "flood", "micro"]
# Not in the default run (20 minutes of its own): only when named.
EXTRA = ["soak", "fleet"]


def main():
    ap = argparse.ArgumentParser(
        prog="benches/run",
        description="gatehouse vs OpenSSH sshd and dnsmasq (see benches/bench/__init__.py)",
    )
    ap.add_argument("parts", nargs="*", help="parts to run (default: all but soak): " + " ".join(ORDER + EXTRA))
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not figures")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders (logs, configs)")
    ap.add_argument("--soak-minutes", type=float, help="how long the soak runs (default 20; --quick: 2)")
    ap.add_argument("--list", action="store_true", help="list the parts")
    ap.add_argument(
        "--dns-records", type=int, action="append", help="zone sizes for part dns (default: 10 and 10000)"
    )
    args = ap.parse_args()
    if args.list:
        for k in ORDER + EXTRA:
            print(f"{k:8} {PARTS[k][0]}" + (" (only when named)" if k in EXTRA else ""))
        return 0
    parts = args.parts or ORDER
    for p in parts:
        if p not in PARTS:
            ap.error(f"unknown part {p!r}; parts: {' '.join(ORDER + EXTRA)}")
    s = Settings(args.quick, args.keep, args.soak_minutes)
    if args.dns_records:
        s.dns_sizes = args.dns_records
    if not GATEHOUSE.exists():
        ap.error(f"{GATEHOUSE} missing: run `cargo build --release` (benches/run does)")
    started = time.monotonic()
    header = machine()
    sections, results = [], {}
    for p in ORDER + EXTRA:
        if p not in parts:
            continue
        title, fn = PARTS[p]
        busy = wait_quiet()
        log(f"== {p}: {title}")
        t0 = time.monotonic()
        try:
            md, data = fn(s)
            results[p] = data
        except Exception as e:  # a broken part must not lose the others' figures
            md = f"**failed**: {e}"
            log(f"{p} failed: {e}")
        took = time.monotonic() - t0
        sections.append(section(title, md, took, busy))
    total = time.monotonic() - started
    cmd = "benches/run" + ("" if not args.parts else " " + " ".join(args.parts)) + (" --quick" if args.quick else "")
    cmd += f" --soak-minutes {args.soak_minutes:g}" if args.soak_minutes else ""
    text = render(cmd, total, args.quick, header, results, sections)
    save(text, results, set(parts) == set(ORDER) and not args.quick)
    print(text)
    log(f"done in {total / 60:.1f} min; figures also in {OUT / 'results.md'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "_flood":
        # The flooder, in its own process (see flood.run_flooder).
        sys.exit(run_flooder(sys.argv[2:]))
    if len(sys.argv) == 3 and sys.argv[1] == "_soak_attacks":
        # The soak's attackers, in their own process (see soak.run_attacks).
        sys.exit(run_attacks(sys.argv[2]))
    sys.exit(main())
