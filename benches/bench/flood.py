"""Part (f) flood: one user's logins while other addresses flood with
half-open key exchanges.

Owns: the raw-socket flooder (_flood_hello, flood_source, _flood_one,
_flood; it runs in a process of its own, `python3 -m bench _flood PORT
RATE SECONDS SOURCES`, see run_flooder) and part_flood (idle versus flooded logins for the four
servers of FLOOD_SERVERS: each jump host as shipped, and both with the
same pre-auth cap and nothing exempt; the table).
Must not: start servers other than through Lab and DataServer, write the
report, or send anything outside 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

from .lab import DataServer, Lab
from .logins import one_login
from .procs import settle, tree_cpu
from .settings import HOLD_AFTER_KEX, Settings
from .util import fmt, log, pct, ratio, table

# The folder holding this package (benches/): the flooder's working folder.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def _ssh_packet(payload: bytes) -> bytes:
    pad = 8 - (5 + len(payload)) % 8
    if pad < 4:
        pad += 8
    return struct.pack(">IB", 1 + len(payload) + pad, pad) + payload + bytes(pad)


def _namelist(*names: str) -> bytes:
    b = ",".join(names).encode()
    return struct.pack(">I", len(b)) + b


def _flood_hello() -> bytes:
    kexinit = (
        b"\x14"
        + os.urandom(16)
        + _namelist("curve25519-sha256")
        + _namelist("ssh-ed25519")
        + _namelist("aes128-gcm@openssh.com") * 2
        + _namelist("hmac-sha2-256-etm@openssh.com") * 2
        + _namelist("none") * 2
        + _namelist() * 2
        + b"\x00"
        + struct.pack(">I", 0)
    )
    ecdh_init = b"\x1e" + struct.pack(">I", 32) + os.urandom(32)
    return b"SSH-2.0-OpenSSH_9.2p1 flood\r\n" + _ssh_packet(kexinit) + _ssh_packet(ecdh_init)


def flood_source(n: int, sources: int) -> str:
    """The source address of flood connection `n`: 127.0.0.1 when the flood
    comes from one address, else 127.0.1.1 .. 127.0.1.`sources` in turn (a
    distributed flood, which a per-source limit cannot single out)."""
    return "127.0.0.1" if sources <= 1 else f"127.0.1.{n % sources + 1}"


async def _flood_one(port, stats, source="127.0.0.1"):
    """One flood connection: hello, then wait for the server's ECDH reply."""
    outcome = "refused"
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 3
        )
        writer.write(_flood_hello())
        buf = b""

        async def until_reply():
            nonlocal buf, outcome
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                if not buf:
                    outcome = "closed after id"
                buf += chunk
                # Skip the identification line(s), then walk the packets.
                i = buf.find(b"\r\n", buf.find(b"SSH-"))
                if i < 0:
                    continue
                pos = i + 2
                while pos + 6 <= len(buf):
                    (length,) = struct.unpack(">I", buf[pos : pos + 4])
                    if buf[pos + 5] == 31:  # SSH_MSG_KEX_ECDH_REPLY
                        outcome = "kex done"
                        # Stay as long as a client's first auth round might:
                        # a pre-auth connection the server has to keep.
                        await asyncio.sleep(HOLD_AFTER_KEX)
                        return
                    pos += 4 + length

        await asyncio.wait_for(until_reply(), 3 + HOLD_AFTER_KEX)
    except asyncio.TimeoutError:
        outcome = "timeout" if outcome != "refused" else "connect timeout"
    except OSError:
        pass
    finally:
        if writer is not None:
            writer.close()
    stats[outcome] = stats.get(outcome, 0) + 1


async def _flood(port, rate, seconds, sources=1):
    stats: dict = {}
    tasks = set()
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        n += 1
        t = asyncio.ensure_future(_flood_one(port, stats, flood_source(n, sources)))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        # Keep the schedule: start connection n at n/rate seconds.
        await asyncio.sleep(max(0, start + n / rate - time.monotonic()))
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    stats["started"] = n
    stats["rate"] = n / (time.monotonic() - start)
    return stats


# The four servers of the flood part, in the order they run (gatehouse,
# sshd, sshd, gatehouse: each pair's first goes first once): label ->
# (server, its settings, flood source addresses). Two pairs:
#  - as shipped: gatehouse with its default limits (20 new connections/min
#    per source, 64 unauthenticated, a quarter of them per source) and the
#    user's office trusted, against sshd's default MaxStartups 10:30:100;
#  - the same cap, nothing exempt: gatehouse with `trusted: []`, no
#    per-source rate and no bans worth the name, against sshd with
#    `MaxStartups 64`, both flooded from FLOOD_SOURCES addresses: that
#    leaves gatehouse only its pre-auth cap (its per-source share of it, a
#    quarter, cannot be turned off, and from one address it alone would
#    turn most of the flood away), as sshd has only MaxStartups; this
#    sshd, 9.2, has no PerSourceMaxStartups or PerSourcePenalties (9.8+),
#    the per-source equivalents.
# Every such row's flood comes from 127.0.1.1 .. 127.0.1.FLOOD_SOURCES.
FLOOD_SOURCES = 64
FLOOD_SERVERS = {
    "gatehouse, defaults, user trusted": ("gatehouse", {"trusted": ["127.0.0.2/32"]}, 1),
    "sshd, MaxStartups 10:30:100 (default)": ("sshd", None, 1),
    f"sshd, MaxStartups 64, flood from {FLOOD_SOURCES} addresses": ("sshd", "64", FLOOD_SOURCES),
    f"gatehouse, nothing exempt, flood from {FLOOD_SOURCES} addresses": (
        "gatehouse",
        {"trusted": [], "per_ip_connections": "10000/s", "ban": {"after": 1_000_000}},
        FLOOD_SOURCES,
    ),
}
# The summary's names for them (report.targets reads "gatehouse" and "sshd").
FLOOD_KEYS = ["gatehouse", "sshd", "sshd MaxStartups 64", "gatehouse nothing exempt"]


def part_flood(s: Settings):
    lab = Lab(s.keep)
    try:
        user = os.environ.get("USER") or "root"
        one = DataServer("one")
        servers = []
        for k, (label, (kind, conf, sources)) in enumerate(FLOOD_SERVERS.items()):
            if kind == "gatehouse":
                proc, port, _ = lab.gatehouse(f"gatehouse{k}", jump={"limits": conf})
                servers.append((label, FLOOD_KEYS[k], proc, port, "bench", sources))
            else:
                proc, port = lab.sshd(f"sshd{k}", max_startups=conf)
                servers.append((label, FLOOD_KEYS[k], proc, port, user, sources))
        rows, summary = [], {}
        for label, key, proc, port, u, sources in servers:
            cmd = lab.ssh(port, u, "-b", "127.0.0.2", "-W", f"127.0.0.1:{one.port}")
            dt, ok, err = one_login(cmd)  # warm-up
            if not ok:
                raise RuntimeError(f"{label}: login failed: {err}")
            phases = {}
            for phase in ("idle", "flood"):
                seconds = s.flood_idle_seconds if phase == "idle" else s.flood_seconds
                flooder = None
                settle(proc.pid)
                if phase == "flood":
                    # `python3 -m bench _flood ...`, run from the folder
                    # that holds the package so that -m finds it.
                    flooder = subprocess.Popen(
                        [sys.executable, "-m", __package__, "_flood", str(port), str(s.flood_rate), str(seconds), str(sources)],
                        stdout=subprocess.PIPE,
                        text=True,
                        cwd=PACKAGE_PARENT,
                    )
                    time.sleep(1)  # let the flood build up
                cpu0, t0 = tree_cpu(proc.pid), time.monotonic()
                t_end = t0 + seconds - (1 if flooder else 0)
                lat, fails, errs = [], 0, []
                while time.monotonic() < t_end:
                    dt, ok, err = one_login(cmd, timeout=15)
                    if ok:
                        lat.append(dt * 1000)
                    else:
                        fails += 1
                        errs.append(err)
                flood_stats = {}
                if flooder:
                    out, _ = flooder.communicate(timeout=60)
                    flood_stats = json.loads(out)
                # Until the last flood connection is gone and reaped (sshd:
                # its per-connection processes into cutime).
                settle(proc.pid)
                cpu = (tree_cpu(proc.pid) - cpu0) / (time.monotonic() - t0)
                phases[phase] = (lat, fails, errs, flood_stats, cpu)
                log(f"flood {label} {phase}: p50 {pct(lat, 50):.1f} p99 {pct(lat, 99):.1f} fails {fails} {flood_stats}")
            (il, ifl, _, _, _), (fl, ffl, ferrs, fs, fcpu) = phases["idle"], phases["flood"]
            # A failed login counts as an infinitely slow one: p99 with more
            # than 1% failures is "failed", not the p99 of the lucky ones.
            ia = il + [float("inf")] * ifl
            fa = fl + [float("inf")] * ffl
            r = ratio(pct(fa, 99), pct(ia, 99))
            summary[key] = r
            flood_desc = ", ".join(
                f"{k} {v}" for k, v in sorted(fs.items()) if k not in ("started", "rate")
            )
            rows.append(
                [
                    label,
                    f"{len(il)} ok / {ifl} failed",
                    fmt(pct(ia, 50)),
                    fmt(pct(ia, 99)),
                    f"{len(fl)} ok / {ffl} failed",
                    fmt(pct(fa, 50)),
                    fmt(pct(fa, 99)),
                    f"**{fmt(r, 2)}x**" if r == r and r != float("inf") else "**failed**",
                    f"{fs.get('started', 0)} at {fs.get('rate', 0):.0f}/s: {flood_desc}"
                    + (f"; user's last error: `{ferrs[-1]}`" if ferrs else ""),
                    fmt(fcpu * 100, 0),
                ]
            )
        md = [
            f"127.0.0.2 logs in sequentially (as in the logins part, `ssh -b 127.0.0.2`) for "
            f"{s.flood_idle_seconds} s idle, then for {s.flood_seconds - 1} s while a flood "
            f"comes at {s.flood_rate} connections/s (each: identification + KEXINIT + a random "
            "curve25519 key, waiting up to 3 s for the server's signed reply, then staying "
            f"{HOLD_AFTER_KEX:g} s more before closing). Four servers, run in this order, one "
            "warm-up login each. As shipped: gatehouse with its default limits (20 new "
            "connections/min per source, 64 unauthenticated, at most a quarter of them per "
            "source) and `trusted: [127.0.0.2/32]` (the user's office), against sshd with its "
            "default MaxStartups 10:30:100. The same cap, nothing exempt: gatehouse with "
            "`trusted: []`, `per_ip_connections: 10000/s` and `ban: { after: 1000000 }`, against "
            "sshd with `MaxStartups 64` (gatehouse's cap; this sshd has no PerSourceMaxStartups or "
            "PerSourcePenalties, which came in OpenSSH 9.8), both flooded from "
            f"{FLOOD_SOURCES} addresses (127.0.1.1 and up, in turn), so that gatehouse's per-source "
            "share of its cap (a quarter, not configurable) singles no one out: only the cap "
            "itself is left on both sides. The as-shipped pair is flooded from 127.0.0.1 alone. "
            "Server CPU % = its CPU time from the flood's start until its last connection is "
            "gone (sshd: its per-connection processes reaped), over that time.",
            "",
            table(
                [
                    "server",
                    "idle logins",
                    "idle p50 ms",
                    "idle p99 ms",
                    "flooded logins",
                    "flooded p50 ms",
                    "flooded p99 ms",
                    "p99 flooded/idle",
                    "flood connections",
                    "server CPU % while flooded",
                ],
                rows,
            ),
        ]
        return "\n".join(md), summary
    finally:
        lab.close()


def run_flooder(argv) -> int:
    """The flooder, in its own process: `python3 -m bench _flood PORT RATE
    SECONDS SOURCES` (started by part_flood); prints its stats as JSON."""
    result = asyncio.run(_flood(int(argv[0]), float(argv[1]), float(argv[2]), int(argv[3])))
    print(json.dumps(result))
    return 0
