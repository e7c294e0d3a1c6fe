"""Part fleet: key + TOTP logins with local state vs a fleet's Redis.

Owns: part_fleet (one gatehouse with `state.redis` on a redis-server the
part starts, one without, the same users with provisioned secrets; each
login a different user, as in part logins' key + TOTP rows). What the
shared store adds per login: a GET of the user's wrong-code count, one
script that claims the step, and (first time per user) reading the
enrollment; for provisioned secrets the secret is still read from the file.
Must not: start servers other than through Lab, or write the report.
"""

from __future__ import annotations

import os
import shutil
import time

from .lab import DataServer, Lab, free_port, wait_tcp
from .logins import TOTP_USERS, compare_logins, one_login
from .settings import Settings
from .util import fmt, log, table


def redis_lines(lab: Lab, port: int) -> list[str]:
    key = lab.dir / "seal.key"
    key.write_text(os.urandom(32).hex() + "\n")
    os.chmod(key, 0o600)
    return [
        "state:",
        "  redis:",
        f'    url: "redis://127.0.0.1:{port}/0"',
        f"    seal_key_file: {key}",
    ]


def part_fleet(s: Settings):
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    lab = Lab(s.keep)
    try:
        port = free_port()
        redis = lab.start("redis", [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        wait_tcp(port, redis, "redis-server")
        one = DataServer("one")
        local, lport, _ = lab.gatehouse("gatehouse-local", jump={"totp_users": TOTP_USERS})
        fleet, fport, _ = lab.gatehouse("gatehouse-redis", jump={"totp_users": TOTP_USERS}, extra=redis_lines(lab, port))
        time.sleep(1)  # the Redis connection is made in the background
        dest = ["-W", f"127.0.0.1:{one.port}"]
        res = {}
        # Each login a different user: replay protection never refuses one.
        servers = []
        for name, proc, gport in (("local", local, lport), ("redis", fleet, fport)):
            users = iter(range(TOTP_USERS))

            def cmd(_k, gport=gport, users=users):
                u = f"u{next(users)}"
                return lab.ssh_totp(gport, u, lab.totp_secret(u), *dest)

            dt, ok, err = one_login(cmd(0))  # warm-up
            if not ok:
                raise RuntimeError(f"{name} key + TOTP: login failed: {err}")
            servers.append((name, proc, cmd))
        for mode, total, width in (("sequential", s.seq_logins, 1), ("8 parallel", s.par_logins, s.par_width)):
            for name, r in compare_logins(servers, min(total, TOTP_USERS // 2 - 1), width).items():
                res[(mode, name)] = r
                log(f"fleet {mode} {name}: {r}")
        rows = []
        for mode in ("sequential", "8 parallel"):
            a, b = res[(mode, "local")], res[(mode, "redis")]
            for name, r in (("local state", a), ("state.redis", b)):
                rows.append([mode, name, f"{r['n'] - r['fails']}/{r['n']}", fmt(r["per_s"]), fmt(r["p50"]), fmt(r["p99"]), fmt(r["cpu_ms"], 2)])  # fmt: skip
            rows.append([mode, "redis − local", "", fmt(b["per_s"] - a["per_s"]), fmt(b["p50"] - a["p50"]), "", ""])  # fmt: skip
        text = table(["logins", "state", "ok", "logins/s", "p50 ms", "p99 ms", "gatehouse CPU ms/login"], rows)
        text += (
            "\n\nKey + TOTP logins through `ssh -W`, each a different user with a provisioned "
            f"secret ({TOTP_USERS} users), against one gatehouse with local state and one with "
            "`state.redis` on a redis-server 7 on loopback (no persistence), same machine; one "
            "warm-up login each, then two rounds of half the logins, alternating which goes first."
        )
        summary = {
            "p50 added ms (sequential)": res[("sequential", "redis")]["p50"] - res[("sequential", "local")]["p50"],
        }
        return text, summary
    finally:
        lab.close()
