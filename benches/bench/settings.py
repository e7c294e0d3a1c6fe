"""Paths, sizes and timings: every number the parts measure with.

Owns: where the binaries are (ROOT, GATEHOUSE, SSHD, DNSMASQ), the fixed
sizes and client flags shared by the parts (GIB, CIPHERS, DNSPERF_*,
DNS_FIXED_*, HOLD_AFTER_KEX, SOAK_*) and Settings (the --quick sizes,
--keep, --soak-minutes).
Must not: start or measure anything. A number changed here changes the
figures: that is a change to what is measured, never a tidy-up.
"""

from __future__ import annotations

import os
from pathlib import Path

# The repository: benches/bench/settings.py is three levels below it.
ROOT = Path(__file__).resolve().parent.parent.parent
# GATEHOUSE_BIN: another build of the same commit (e.g. with debug line
# tables, for `perf`); the default is what `cargo build --release` makes.
GATEHOUSE = Path(os.environ.get("GATEHOUSE_BIN", ROOT / "target" / "release" / "gatehouse"))
SSHD = "/usr/sbin/sshd"
DNSMASQ = "/usr/sbin/dnsmasq"
KNOTD = "/usr/sbin/knotd"
NSD = "/usr/sbin/nsd"

GIB = 1 << 30
CIPHERS = [
    "chacha20-poly1305@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
]
# dnsperf for the maximum, in two client shapes: one source port (one
# client, one thread, 100 outstanding), and 8 clients (source ports, as
# stub resolvers randomise them, so SO_REUSEPORT sockets all get traffic),
# 2 threads, up to 400 outstanding.
DNSPERF_SHAPES = {
    "one port": ["-c", "1", "-T", "1", "-q", "100"],
    "many ports": ["-c", "8", "-T", "2", "-q", "400"],
}
DNSPERF_SECONDS = 10
DNS_FIXED_QPS = 10_000
DNS_FIXED_SECONDS = 5
# A flood connection stays this long after the server's kex reply.
HOLD_AFTER_KEX = 1.0

# The soak (soak.py): what runs at once and how hard; all of it together
# is meant to leave most of the 2 cores free (it measures stability, not
# speed). Readings every SOAK_SAMPLE_SECONDS; dnsperf at a fixed rate; each
# `-W`/`nc` login echoes SOAK_TUNNEL_BYTES each way, each ControlMaster
# tunnel SOAK_CM_TUNNEL_BYTES; a login every N s per form; one
# ControlMaster at a time, living SOAK_CM_SECONDS with SOAK_CM_PARALLEL
# tunnels opening and closing.
SOAK_SAMPLE_SECONDS = 10
SOAK_DNS_QPS = 2000
SOAK_TUNNEL_BYTES = 2 << 20
SOAK_CM_TUNNEL_BYTES = 1 << 20
SOAK_LOGIN_EVERY = {"ssh -W": 1.0, "nc exec": 2.0}
SOAK_CM_SECONDS = 60
SOAK_CM_PARALLEL = 3
# Attacks: kind -> (lanes at once, pause s between a lane's tries, tries per
# source address before the lane moves to the next one). Two exceptions:
# "hold" opens that many connections at once from one source, twice per
# source (10 lanes x 6 fill max_unauthenticated, 64, with the legit
# logins); "dns garbage" sends that many datagrams per source, `pause` apart.
SOAK_ATTACKS = {
    "hold": (10, 1.0, 6),
    "garbage": (2, 0.5, 5),
    "truncated": (2, 0.5, 5),
    "long user": (1, 1.0, 6),
    "wrong key": (2, 0.5, 8),
    "dns garbage": (1, 0.01, 200),
}


class Settings:
    """Sizes; --quick makes everything smaller (smoke test only). `keep`
    (--keep): each Lab keeps its temporary folder (logs, configs)."""

    def __init__(self, quick: bool, keep: bool = False, soak_minutes: float | None = None):
        self.quick = quick
        self.keep = keep
        self.tunnel_bytes = (64 << 20) if quick else GIB
        self.tunnel_runs = 1 if quick else 5
        self.nc_runs = 1 if quick else 5
        self.seq_logins = 5 if quick else 30
        self.par_logins = 16 if quick else 80
        self.par_width = 8
        self.mem_steps = [0, 10, 20] if quick else [0, 50, 500]
        self.dns_seconds = 2 if quick else DNSPERF_SECONDS
        self.dns_runs = 1 if quick else 3
        self.dns_fixed_seconds = 2 if quick else DNS_FIXED_SECONDS
        self.dns_sizes = [10, 10_000]
        self.flood_idle_seconds = 3 if quick else 10
        self.flood_seconds = 4 if quick else 15
        self.flood_rate = 200
        self.soak_seconds = 60 * (soak_minutes or (2 if quick else 20))
        # Readings before this are warm-up (allocator pools, caches, tables).
        self.soak_warmup = min(120.0, 0.2 * self.soak_seconds)
