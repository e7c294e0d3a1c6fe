"""Part (c) logins: full ssh logins per second, key only and key + TOTP.

Owns: one_login (one timed ssh login that must print the one byte; the
memory and flood parts use it too), logins (N at a time), compare_logins
(servers in rounds, alternating which goes first, with each server's CPU
around its logins; the kex and fleet parts use it too), part_logins and totp_logins.
Must not: start servers other than through Lab and DataServer, or write
the report.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

from .lab import DataServer, Lab, jump_pair
from .procs import settle, tree_cpu
from .settings import Settings
from .util import fmt, log, pct, ratio, table


def one_login(cmd, timeout=30):
    """`cmd` is a command line, or (command line, extra environment)."""
    env = None
    if isinstance(cmd, tuple):
        cmd, extra = cmd
        env = {**os.environ, **extra}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=env
        )
        ok = p.returncode == 0 and p.stdout == b"x"
        if not ok:
            err = p.stderr.decode(errors="replace").strip().splitlines()
            ok_err = err[-1] if err else f"exit {p.returncode}"
        else:
            ok_err = ""
    except subprocess.TimeoutExpired:
        ok, ok_err = False, "timeout"
    return time.perf_counter() - t0, ok, ok_err


def logins(cmd, total, width):
    """Run `total` logins, `width` at a time; (wall s, [latency s], failures, last error).
    `cmd` is a command line, or a function from the login's number to one."""
    lat, fails, errs = [], 0, []
    lock = threading.Lock()
    counter = iter(range(total))

    def worker():
        nonlocal fails
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                return
            dt, ok, err = one_login(cmd(k) if callable(cmd) else cmd)
            with lock:
                if ok:
                    lat.append(dt)
                else:
                    fails += 1
                    errs.append(err)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(width)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, lat, fails, errs[-1] if errs else ""


def _timed(proc, cmd, total, width) -> dict:
    """`total` logins (`width` at a time): the raw figures, with the
    server's CPU time around them (read once its per-connection processes
    are reaped)."""
    settle(proc.pid)
    cpu0 = tree_cpu(proc.pid)
    wall, lat, fails, err = logins(cmd, total, width)
    settle(proc.pid)  # sshd's per-connection processes reaped: in its cutime
    return {"wall": wall, "lat": lat, "fails": fails, "err": err, "cpu": tree_cpu(proc.pid) - cpu0, "n": total}


def _summary(raws) -> dict:
    """The figures of one or more _timed rounds taken together."""
    wall = sum(r["wall"] for r in raws)
    lat = [x for r in raws for x in r["lat"]]
    total = sum(r["n"] for r in raws)
    errs = [r["err"] for r in raws if r["err"]]
    return {
        "per_s": len(lat) / wall,
        "p50": pct(lat, 50) * 1000,
        "p99": pct(lat, 99) * 1000,
        "cpu_ms": sum(r["cpu"] for r in raws) * 1000 / max(1, total),
        "fails": sum(r["fails"] for r in raws),
        "err": errs[-1] if errs else "",
        "n": total,
    }


def compare_logins(servers, total, width, rounds=2) -> dict:
    """`total` logins per server, in `rounds` rounds; each round runs every
    server in turn, and the order flips from one round to the next (A B, B
    A), so neither server always goes first (a machine warming up or
    slowing down favours no one). `servers` is [(name, process, cmd)];
    returns name -> the figures of its rounds taken together."""
    raws = {name: [] for name, _, _ in servers}
    for r in range(rounds):
        n = total // rounds + (1 if r < total % rounds else 0)
        for name, proc, cmd in servers if r % 2 == 0 else list(reversed(servers)):
            raws[name].append(_timed(proc, cmd, n, width))
    return {name: _summary(rs) for name, rs in raws.items()}


def part_logins(s: Settings):
    lab = Lab(s.keep)
    try:
        servers = jump_pair(lab)
        one = DataServer("one")
        res = {}
        for name, proc, port, user in servers:
            cmd = lab.ssh(port, user, "-W", f"127.0.0.1:{one.port}")
            dt, ok, err = one_login(cmd)  # warm-up
            if not ok:
                raise RuntimeError(f"{name}: login failed: {err}")
        cmd = {name: lab.ssh(port, user, "-W", f"127.0.0.1:{one.port}") for name, _, port, user in servers}
        for mode, total, width in (("sequential", s.seq_logins, 1), ("8 parallel", s.par_logins, s.par_width)):
            got = compare_logins([(name, proc, cmd[name]) for name, proc, _, _ in servers], total, width)
            for name, r in got.items():
                res[(mode, name)] = r
                log(f"logins {mode} {name}: {r}")
        totp_note = totp_logins(s, lab, one, res)
        rows, summary = [], {}
        for mode in ("sequential", "8 parallel", "key + TOTP, sequential", "key + TOTP, 8 parallel"):
            if (mode, "gatehouse") not in res:
                continue
            g, o = res[(mode, "gatehouse")], res.get((mode, "sshd"))
            if o is None:
                r = g
                rows.append([mode, "gatehouse", f"{r['n'] - r['fails']}/{r['n']}", fmt(r["per_s"]),
                             fmt(r["p50"]), fmt(r["p99"]), fmt(r["cpu_ms"], 2)])  # fmt: skip
                rows.append([mode, "sshd", "(no pam_google_authenticator)", "", "", "", ""])
                continue
            for name, r in (("gatehouse", g), ("sshd", o)):
                rows.append(
                    [
                        mode,
                        name,
                        f"{r['n'] - r['fails']}/{r['n']}",
                        fmt(r["per_s"]),
                        fmt(r["p50"]),
                        fmt(r["p99"]),
                        fmt(r["cpu_ms"], 2),
                    ]
                )
            rows.append(
                [
                    mode,
                    "**ratio g/o**",
                    "",
                    f"**{ratio(g['per_s'], o['per_s']):.2f}x**",
                    f"{ratio(g['p50'], o['p50']):.2f}x",
                    f"{ratio(g['p99'], o['p99']):.2f}x",
                    f"**{ratio(g['cpu_ms'], o['cpu_ms']):.2f}x**",
                ]
            )
            if "TOTP" not in mode:  # the targets are key-only (see the issue)
                summary[mode] = {
                    "rate_ratio": ratio(g["per_s"], o["per_s"]),
                    "cpu_ratio": ratio(g["cpu_ms"], o["cpu_ms"]),
                }
        md = [
            "Each login: `ssh -o ControlMaster=no ... -W 127.0.0.1:PORT` to a server that sends "
            "one byte and closes (connect, curve25519 kex, ed25519 publickey, channel, byte, "
            "close). Latency = the ssh process's wall time. Server CPU = all server processes, "
            "per login, read once sshd has reaped its per-connection processes. Each mode runs "
            "in two rounds of half the logins, alternating which server goes first, after one "
            "warm-up login each. The targets are judged on the key-only rows (the same work on both "
            "sides; TOTP replay protection would otherwise cap one user at one login per 30 s).",
            "",
            totp_note,
            "",
            table(
                ["mode", "server", "ok", "logins/s", "p50 ms", "p99 ms", "server CPU ms/login"],
                rows,
            ),
        ]
        return "\n".join(md), summary
    finally:
        lab.close()


TOTP_USERS = 200


def totp_logins(s: Settings, lab: Lab, one: DataServer, res: dict) -> str:
    """Key + TOTP logins: gatehouse with TOTP_USERS users holding provisioned
    secrets (each login a different user, so replay protection, which is
    persisted per login, never refuses one), against sshd with
    pam_google_authenticator for one user. The codes come from oathtool
    through SSH_ASKPASS. Adds rows to `res`; returns the paragraph that
    describes them."""
    g, gport, _ = lab.gatehouse("gatehouse-totp", jump={"totp_users": TOTP_USERS})
    pam = lab.sshd_pam_totp("sshd-totp")
    user = os.environ.get("USER") or "root"
    users = iter(range(TOTP_USERS))
    dest = ["-W", f"127.0.0.1:{one.port}"]

    def gatehouse_cmd(_k):
        u = f"u{next(users)}"
        return lab.ssh_totp(gport, u, lab.totp_secret(u), *dest)

    servers = [("gatehouse", g, gatehouse_cmd)]
    if pam is not None:
        p, port = pam
        sshd_cmd = lab.ssh_totp(port, user, lab.totp_secret("pam"), *dest)
        servers.append(("sshd", p, lambda _k: sshd_cmd))
    for name, _, cmd in servers:
        dt, ok, err = one_login(cmd(0))  # warm-up
        if not ok:
            raise RuntimeError(f"{name} key + TOTP: login failed: {err}")
    for mode, total, width in (
        ("key + TOTP, sequential", s.seq_logins, 1),
        ("key + TOTP, 8 parallel", s.par_logins, s.par_width),
    ):
        for name, r in compare_logins(servers, total, width).items():
            res[(mode, name)] = r
            log(f"logins {mode} {name}: {r}")
    sshd_part = (
        "sshd: `UsePAM yes`, `AuthenticationMethods publickey,keyboard-interactive`, "
        "pam_google_authenticator with one secret for the one Unix user, `TOTP_AUTH` without "
        "`DISALLOW_REUSE` (with it, that user could log in once per 30 s)."
        if pam is not None
        else "sshd: not measured, libpam-google-authenticator is not installed here."
    )
    return (
        f"Key + TOTP rows: gatehouse with `mfa: required` and {TOTP_USERS} users, each with "
        "a provisioned secret (`totp_secret_file`), each login a different user, so every "
        "login reads its secret, checks the code and persists the replay state (atomic "
        "write); the code comes from `oathtool --totp` through `SSH_ASKPASS` (a shell "
        "and oathtool per login on the client side, for both servers). " + sshd_part
    )
