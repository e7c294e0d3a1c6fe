"""Part kex: key-only logins per key exchange, gatehouse and OpenSSH sshd.

Owns: part_kex (the same `ssh -W` logins as part logins, with
`-o KexAlgorithms=NAME` for each hybrid and for curve25519, against both
servers; what the hybrid adds to the server's CPU per login).
Must not: start servers other than through Lab and DataServer, or write
the report.
"""

from __future__ import annotations

import subprocess

from .lab import DataServer, Lab, jump_pair
from .logins import compare_logins, one_login
from .settings import Settings
from .util import fmt, log, table

KEXES = ["curve25519-sha256", "sntrup761x25519-sha512@openssh.com", "mlkem768x25519-sha256"]


def part_kex(s: Settings):
    known = subprocess.run(["ssh", "-Q", "kex"], capture_output=True, text=True).stdout.split()
    kexes = [k for k in KEXES if k in known]
    missing = [k for k in KEXES if k not in known]
    lab = Lab(s.keep)
    try:
        servers = jump_pair(lab)
        one = DataServer("one")
        res = {}
        for kex in kexes:
            for name, proc, port, user in servers:
                cmd = lab.ssh(port, user, "-W", f"127.0.0.1:{one.port}", kex=kex)
                dt, ok, err = one_login(cmd)  # warm-up
                if not ok:
                    raise RuntimeError(f"{name} with {kex}: login failed: {err}")
                # What was negotiated, from ssh -v: the name asked for, nothing else.
                seen = subprocess.run([cmd[0], "-v", *cmd[1:]], stdin=subprocess.DEVNULL, capture_output=True, text=True)
                if f"kex: algorithm: {kex}\n" not in seen.stderr:
                    raise RuntimeError(f"{name}: asked for {kex}, ssh -v says: {seen.stderr[-2000:]}")
        # Per kex, both servers in two rounds, alternating which goes first.
        for kex in kexes:
            pair = [(name, proc, lab.ssh(port, user, "-W", f"127.0.0.1:{one.port}", kex=kex)) for name, proc, port, user in servers]  # fmt: skip
            for name, r in compare_logins(pair, s.seq_logins * 5, 1).items():
                res[(name, kex)] = r
                log(f"kex {name} {kex}: {r}")
        rows, summary = [], {}
        for name, *_ in servers:
            base = res[(name, "curve25519-sha256")]
            for kex in kexes:
                r = res[(name, kex)]
                rows.append([name, f"`{kex}`", f"{r['n'] - r['fails']}/{r['n']}", fmt(r["per_s"]), fmt(r["p50"]),
                             fmt(r["cpu_ms"], 2), fmt(r["cpu_ms"] - base["cpu_ms"], 2)])  # fmt: skip
        for kex in kexes[1:]:
            summary[f"gatehouse CPU added by {kex} (ms/login)"] = (
                res[("gatehouse", kex)]["cpu_ms"] - res[("gatehouse", "curve25519-sha256")]["cpu_ms"]
            )
        md = [
            "Key-only logins, one at a time: `ssh -o KexAlgorithms=NAME ... -W 127.0.0.1:PORT` "
            "(the other parts force curve25519-sha256) "
            "to a server that sends one byte (as part c), one warm-up login per server and kex, "
            "then per kex two rounds of half the logins, alternating which server goes first. "
            "Server CPU = all server processes, per login; the last column is what the key exchange adds over curve25519-sha256.",
            "",
            table(["server", "kex", "ok", "logins/s", "p50 ms", "server CPU ms/login", "vs curve25519"], rows),
        ]
        if missing:
            md += ["", f"Not measured: this `ssh` ({subprocess.run(['ssh', '-V'], capture_output=True, text=True).stderr.strip()}) "
                       f"does not offer {', '.join(missing)}; the criterion bench `kex` has its server-side cost."]  # fmt: skip
        return "\n".join(md), summary
    finally:
        lab.close()
