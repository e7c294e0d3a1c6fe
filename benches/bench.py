#!/usr/bin/env python3
"""gatehouse side by side with OpenSSH sshd (as a jump host) and dnsmasq.

How to read this file
---------------------
Run it through `benches/run` (which installs the tools and builds
target/release/gatehouse). Every part starts its own servers on loopback,
on ports picked at random, in a fresh /tmp/gatehouse-bench.* folder that is
deleted at the end; both servers of a comparison run at the same time and
are measured with the same client command line, alternating which goes
first. Everything is bounded: each client has a timeout and is killed after
it. Before each part the harness waits (up to 2 min) for other programs to
use less than 15% of the CPUs, and the report says how busy they were.

The two jump hosts:
  gatehouse  `gatehouse run --config FILE`: user `bench`, key only
             (`mfa: optional`, no enrollment), group granted `127.0.0.0/8:*`,
             `limits.trusted: ["127.0.0.0/8"]` (the defaults, 20
             connections/min per source and 64 unauthenticated, would refuse
             a benchmark; the flood part keeps them, see there);
  sshd       `/usr/sbin/sshd -D -e -f CONFIG`: its own ed25519 host key and
             port, the current user with the same key in an authorized_keys
             file, publickey only, `AllowTcpForwarding yes`, no PAM,
             `MaxStartups 1000`/`MaxSessions 1000` (the flood part keeps the
             default MaxStartups 10:30:100).
The client is the same `ssh` for both (see SSH_OPTS): a fresh connection
each time (ControlMaster=no), and `KexAlgorithms=curve25519-sha256` +
`HostKeyAlgorithms=ssh-ed25519` so both servers do the same key exchange
(without it, sshd would pick sntrup761x25519, which russh lacks).

Parts and figures:
  tunnel  (a) 1 GiB through `ssh -W 127.0.0.1:PORT`: up = stdin from
          `head -c` to a sink that reads exactly that many bytes; down = a
          source that sends them, read from ssh's stdout. MiB/s are timed at
          the receiving end from first to last byte (logins excluded);
          median of the runs per cipher and direction; ratio =
          gatehouse/sshd. "CPU s/GiB" is the server's CPU time (all its
          processes, see tree_cpu) per GiB moved.
  nc      (b) the same through the legacy exec form `ssh HOST nc 127.0.0.1
          PORT`: gatehouse recognises the command and tunnels itself; sshd
          runs the real netcat-openbsd under the user's shell.
  logins  (c) full logins: ssh connect + key + `-W` to a server that sends
          one byte and closes; a login counts when ssh exits 0 having printed
          that byte. Sequential and 8 in parallel; logins/s = logins / wall
          time; p50/p99 of each ssh's wall time; server CPU ms per login =
          the server's CPU delta / logins.
  memory  (d) idle authenticated connections held by `ssh -N -f` (opened 8
          at a time): RSS and PSS of the server (for sshd summed over all its
          processes) with 0, 50 and 500 connections; growth per connection =
          (at 500 - at 50) / 450. PSS is the fair figure for sshd: its
          per-connection processes share their libraries.
  dns     (e) dnsperf (UDP, no EDNS), 3 runs of 10 s per server and query
          set (medians), against zone `bench` with 10 and 10,000 records
          `rN: 10.x.y.z` (dnsmasq: `address=/.rN.bench/10.x.y.z`). Query sets: A for record names and names below them;
          AAAA for the same (IPv4-only) names; A for names outside the zone.
          "max" = dnsperf's QPS with DNSPERF_MAX flags (dnsperf shares the 2
          cores with the server); latency = a second run at a fixed
          10,000 QPS, p50/p99 from dnsperf -v per-query latencies. Response
          codes are shown: the two servers answer differently on purpose.
  flood   (f) a login flood from 127.0.0.1: ~200 new connections/s, each
          sending an SSH identification, KEXINIT and a random curve25519
          key right away (what a credential stuffer's client does first:
          it makes the server compute the shared secret and sign with its
          host key), then staying 1 s after the server's reply (3 s
          timeout for it) as a client in its first auth round would.
          Meanwhile 127.0.0.2 (`ssh -b 127.0.0.2`) logs in sequentially as
          in (c); a failed login counts as infinitely slow in its p99. Figures: that user's p50/p99 and failures
          idle versus flooded, and what happened to the flood connections.
          gatehouse keeps its default limits here (20/min per source, 64
          unauthenticated) and trusts only 127.0.0.2/32 (the user's office);
          sshd keeps its default MaxStartups 10:30:100.
  micro   criterion benches (dns/benches, jump/benches) with --quick.

Targets (from the issue, for reference; never tuned for): tunnel >= 1.0x
sshd each cipher/direction; logins/s >= 3x and CPU/login <= 1/3; RSS growth
<= 180 KiB per idle connection; DNS QPS >= 1.25x dnsmasq; flood p99 <= 1.5x
idle.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import fcntl
import glob
import json
import os
import platform
import queue
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# GATEHOUSE_BIN: another build of the same commit (e.g. with debug line
# tables, for `perf`); the default is what `cargo build --release` makes.
GATEHOUSE = Path(os.environ.get("GATEHOUSE_BIN", ROOT / "target" / "release" / "gatehouse"))
SSHD = "/usr/sbin/sshd"
DNSMASQ = "/usr/sbin/dnsmasq"
OUT = ROOT / "target" / "bench"
RESULTS = ROOT / "benches" / "RESULTS.md"
BEGIN = "<!-- benches/run: generated figures begin -->"
END = "<!-- benches/run: generated figures end -->"

GIB = 1 << 30
CIPHERS = [
    "chacha20-poly1305@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
]
# dnsperf for the maximum: 8 clients (source ports, so gatehouse's
# SO_REUSEPORT sockets both get traffic), 2 threads, up to 400 outstanding.
DNSPERF_MAX = ["-c", "8", "-T", "2", "-q", "400"]
DNSPERF_SECONDS = 10
DNS_FIXED_QPS = 10_000
DNS_FIXED_SECONDS = 5
# A flood connection stays this long after the server's kex reply.
HOLD_AFTER_KEX = 1.0

CLK_TCK = os.sysconf("SC_CLK_TCK")
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, Linux; named in Python >= 3.10 only


class Settings:
    """Sizes; --quick makes everything smaller (smoke test only)."""

    def __init__(self, quick: bool):
        self.quick = quick
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


# --------------------------------------------------------------------------
# Small helpers


def log(*args):
    print("[bench]", *args, file=sys.stderr, flush=True)


def free_port(udp_too: bool = False) -> int:
    """A port free on 127.0.0.1 for TCP (and UDP). Released before use: a
    race with another program is possible, and then the server fails to
    start and the part says so."""
    for _ in range(50):
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        try:
            if udp_too:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                finally:
                    u.close()
            return port
        finally:
            t.close()
    raise RuntimeError("no free port")


def wait_tcp(port: int, proc: subprocess.Popen, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over `seconds` (0..1), from /proc/stat."""

    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]  # idle + iowait
        return sum(v), idle

    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(limit: float = 0.15, patience: float = 120) -> float:
    """Wait (up to `patience` s) until other programs use less than `limit`
    of the CPUs: these figures mean nothing next to a compiler. Returns the
    last busy share seen, which the report shows."""
    deadline = time.monotonic() + patience
    busy = cpu_busy()
    while busy > limit and time.monotonic() < deadline:
        log(f"machine {busy:.0%} busy before starting; waiting for it to calm down")
        time.sleep(4)
        busy = cpu_busy()
    return busy


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def ratio(a, b):
    return a / b if b else float("nan")


def fmt(x, digits=1):
    if x != x:  # NaN
        return "n/a"
    if x == float("inf"):
        return "failed"
    return f"{x:,.{digits}f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def run_text(cmd) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"


# --------------------------------------------------------------------------
# /proc: CPU and memory of a server and all its processes


def _proc_table():
    """pid -> (ppid, utime+stime+cutime+cstime in ticks) for every process."""
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        ppid = int(fields[1])
        ticks = sum(int(x) for x in fields[11:15])
        procs[int(entry)] = (ppid, ticks)
    return procs


def tree_pids(root: int, procs=None):
    procs = procs if procs is not None else _proc_table()
    children = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def _tasks_ns(pid: int) -> int:
    """CPU nanoseconds of the live threads of `pid` (schedstat: exact, where
    /proc/PID/stat only has 10 ms ticks)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    except OSError:
        pass
    return total


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and its live descendants (their threads'
    schedstat), plus the children each has reaped (cutime + cstime): every
    process of the tree that ran is counted once, whether it is still alive
    or was reaped (sshd's per-connection processes, the shells and nc it
    runs). A thread that exits between two readings loses its time (tokio's
    blocking threads live 10 s: a small undercount at most)."""
    procs = _proc_table()
    total = 0.0
    for pid in tree_pids(root, procs):
        total += _tasks_ns(pid) / 1e9
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            fields = stat[stat.rfind(")") + 2 :].split()
            total += (int(fields[13]) + int(fields[14])) / CLK_TCK
        except OSError:
            pass
    return total


def tree_mem(root: int):
    """(RSS KiB, PSS KiB, processes) summed over `root` and its descendants."""
    rss = pss = 0
    pids = tree_pids(root)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss, len(pids)


# --------------------------------------------------------------------------
# Loopback data servers: sink, source, one byte


class DataServer:
    """A loopback TCP server on its own thread.

    mode "sink":   reads exactly `nbytes` per connection, then closes; puts
                   (bytes, first-byte time, last-byte time) on `results`.
    mode "source": sends `nbytes` per connection, then closes.
    mode "one":    sends one byte `x`, then closes (the login benchmark).
    """

    def __init__(self, mode: str, nbytes: int = 0):
        self.mode, self.nbytes = mode, nbytes
        self.results: queue.Queue = queue.Queue()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.mode == "one":
                try:
                    conn.sendall(b"x")
                finally:
                    conn.close()
            else:
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket):
        try:
            if self.mode == "sink":
                buf = bytearray(4 << 20)
                got, first = 0, None
                while got < self.nbytes:
                    n = conn.recv_into(buf)
                    if n == 0:
                        break
                    if first is None:
                        first = time.perf_counter()
                    got += n
                self.results.put((got, first, time.perf_counter()))
            else:
                chunk = memoryview(bytes(4 << 20))
                left = self.nbytes
                while left > 0:
                    n = min(left, len(chunk))
                    conn.sendall(chunk[:n])
                    left -= n
        except OSError as e:
            if self.mode == "sink":
                self.results.put((0, None, None))
            log(f"{self.mode}: {e}")
        finally:
            conn.close()

    def close(self):
        self.sock.close()


# --------------------------------------------------------------------------
# The servers


class Lab:
    """A temporary folder with a client key, and the servers started in it."""

    def __init__(self, keep: bool = False):
        self.dir = Path(tempfile.mkdtemp(prefix="gatehouse-bench."))
        os.chmod(self.dir, 0o700)
        self.keep = keep
        self.procs: list[subprocess.Popen] = []
        # Files outside self.dir to remove on close (a PAM service file).
        self.cleanup: list[Path] = []
        self.key = self.dir / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(self.key)],
            check=True,
        )
        self.pub = (self.dir / "id_ed25519.pub").read_text().strip()

    def start(self, name: str, cmd, **kw) -> subprocess.Popen:
        logf = open(self.dir / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def gatehouse(self, name: str, jump: dict | None = None, dns_records: int | None = None):
        """Start gatehouse; returns (process, ssh port or None, dns port or None)."""
        state = self.dir / f"{name}-state"
        state.mkdir(mode=0o700)
        lines = [f"state_dir: {state}", "log: { format: json, level: info }"]
        ssh_port = dns_port = None
        if jump is not None:
            ssh_port = free_port()
            limits = jump.get("limits", {"trusted": ["127.0.0.0/8"]})
            totp_users = jump.get("totp_users", 0)
            lines += [
                "jump:",
                f'  listen: ["127.0.0.1:{ssh_port}"]',
                f"  mfa: {'required' if totp_users else 'optional'}",
                f"  limits: {json.dumps(limits)}",
                "  users:",
                "    bench:",
                f"      keys: [{json.dumps(self.pub)}]",
                "      groups: [bench]",
            ]
            for k in range(totp_users):
                lines += [
                    f"    u{k}:",
                    f"      keys: [{json.dumps(self.pub)}]",
                    "      groups: [bench]",
                    f"      totp_secret_file: {self.totp_secret(f'u{k}')}",
                ]
            lines += [
                "  groups:",
                "    bench:",
                '      allow: ["127.0.0.0/8:*"]',
            ]
        if dns_records is not None:
            dns_port = free_port(udp_too=True)
            lines += [
                "dns:",
                f'  listen: ["127.0.0.1:{dns_port}"]',
                "  ttl: 60s",
                "  zones:",
                "    bench:",
                "      records:",
            ]
            lines += [f"        r{i}: {record_ip(i)}" for i in range(dns_records)]
        # The config gets a folder of its own: gatehouse watches the config's
        # folder for changes, and would wake up for every line written to
        # the logs if they were next to it.
        etc = self.dir / f"{name}-etc"
        etc.mkdir(mode=0o700)
        config = etc / "gatehouse.yaml"
        config.write_text("\n".join(lines) + "\n")
        p = self.start(name, [str(GATEHOUSE), "run", "--config", str(config)])
        if ssh_port:
            wait_tcp(ssh_port, p, "gatehouse")
        if dns_port:
            wait_tcp(dns_port, p, "gatehouse")
        return p, ssh_port, dns_port

    def totp_secret(self, user: str) -> Path:
        """A provisioned TOTP secret for `user` (base32, 0600): the file
        gatehouse's `totp_secret_file` names and the askpass helper reads."""
        secrets = self.dir / "totp-secrets"
        secrets.mkdir(mode=0o700, exist_ok=True)
        path = secrets / user
        if not path.exists():
            path.write_text(base64.b32encode(os.urandom(20)).decode() + "\n")
            os.chmod(path, 0o600)
        return path

    def askpass(self) -> Path:
        """SSH_ASKPASS helper answering `Verification code:` with oathtool,
        from the secret file named by $BENCH_TOTP_SECRET."""
        path = self.dir / "askpass-totp"
        if not path.exists():
            path.write_text('#!/bin/sh\nexec oathtool --totp -b "$(cat "$BENCH_TOTP_SECRET")"\n')
            os.chmod(path, 0o700)
        return path

    def ssh_totp(self, port: int, user: str, secret: Path, *extra: str):
        """An ssh login that answers the code prompt: (command, environment)."""
        cmd = self.ssh(port, user, *extra)
        cmd[cmd.index("BatchMode=yes")] = "BatchMode=no"
        env = {
            "SSH_ASKPASS": str(self.askpass()),
            "SSH_ASKPASS_REQUIRE": "force",
            "BENCH_TOTP_SECRET": str(secret),
        }
        return cmd, env

    def sshd_pam_totp(self, name: str):
        """sshd with publickey + keyboard-interactive through
        pam_google_authenticator, or None when the module is not installed.
        sshd names its PAM service after its program name, so it runs
        through a symlink and the service file is /etc/pam.d/<that name>
        (removed again by close())."""
        module = glob.glob("/usr/lib/*/security/pam_google_authenticator.so") + glob.glob(
            "/lib/*/security/pam_google_authenticator.so"
        )
        if not module or not os.access("/etc/pam.d", os.W_OK):
            return None
        service = f"gatehouse-bench-{os.getpid()}"
        ga = self.dir / "google_authenticator"
        ga.write_text(self.totp_secret("pam").read_text() + '" TOTP_AUTH\n')
        os.chmod(ga, 0o600)
        pam = Path("/etc/pam.d") / service
        pam.write_text(
            f"auth required pam_google_authenticator.so secret={ga} user=root\n"
            "account required pam_permit.so\n"
            "session required pam_permit.so\n"
        )
        self.cleanup.append(pam)
        link = self.dir / service
        link.symlink_to(SSHD)
        p, port = self.sshd(
            name,
            binary=str(link),
            extra="UsePAM yes\nKbdInteractiveAuthentication yes\n"
            "AuthenticationMethods publickey,keyboard-interactive\nPermitRootLogin yes\n",
        )
        return p, port

    def sshd(self, name: str, max_startups: str | None = "1000", binary: str = "", extra: str = ""):
        """Start an OpenSSH sshd as a jump host; returns (process, port)."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        host_key = self.dir / f"{name}_host_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True
        )
        auth = self.dir / "authorized_keys"
        auth.write_text(self.pub + "\n")
        port = free_port()
        config = self.dir / f"{name}_config"
        text = (
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"PidFile {self.dir / name}.pid\nAuthorizedKeysFile {auth}\n"
            + extra
            + "StrictModes no\nUsePAM no\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n"
            "X11Forwarding no\nPrintMotd no\nPrintLastLog no\nUseDNS no\n"
            "LogLevel INFO\nMaxSessions 1000\n"
        )
        if max_startups:
            text += f"MaxStartups {max_startups}\n"
        config.write_text(text)
        p = self.start(name, [binary or SSHD, "-D", "-e", "-f", str(config)])
        wait_tcp(port, p, "sshd")
        return p, port

    def dnsmasq(self, name: str, records: int):
        conf = self.dir / f"{name}.conf"
        conf.write_text("".join(f"address=/.r{i}.bench/{record_ip(i)}\n" for i in range(records)))
        port = free_port(udp_too=True)
        p = self.start(
            name,
            [
                DNSMASQ,
                "--no-resolv",
                "--no-hosts",
                "-p",
                str(port),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "-k",
                "-C",
                str(conf),
                "--log-facility=-",
            ],
        )
        wait_tcp(port, p, "dnsmasq")
        return p, port

    def ssh(self, port: int, user: str, *extra: str, cipher: str | None = None):
        cmd = ["ssh", "-F", "/dev/null", "-i", str(self.key), *SSH_OPTS, "-p", str(port)]
        if cipher:
            cmd += ["-c", cipher]
        return cmd + list(extra) + [f"{user}@127.0.0.1"]

    def stop_clients(self):
        """Kill the background ssh clients of this lab (they name our key)."""
        marker = str(self.key).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if cmdline.startswith(b"ssh\0") and marker in cmdline:
                try:
                    os.kill(int(entry), signal.SIGTERM)
                except OSError:
                    pass

    def close(self):
        self.stop_clients()
        for path in self.cleanup:
            path.unlink(missing_ok=True)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.keep:
            log(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


SSH_OPTS = [
    "-o", "IdentitiesOnly=yes",
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ControlMaster=no",
    "-o", "ControlPath=none",
    "-o", "KexAlgorithms=curve25519-sha256",
    "-o", "HostKeyAlgorithms=ssh-ed25519",
    "-o", "Compression=no",
    "-o", "ConnectTimeout=10",
]  # fmt: skip


def record_ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def jump_pair(lab: Lab, max_startups="1000"):
    """Both jump hosts; [(name, process, port, user)]."""
    g, gport, _ = lab.gatehouse("gatehouse", jump={})
    s, sport = lab.sshd("sshd", max_startups=max_startups)
    user = os.environ.get("USER") or subprocess.run(
        ["id", "-un"], capture_output=True, text=True
    ).stdout.strip()
    return [("gatehouse", g, gport, "bench"), ("sshd", s, sport, user)]


# --------------------------------------------------------------------------
# (a), (b) throughput


def big_pipe():
    """A pipe with a 1 MiB buffer (the default 64 KiB makes the pipe, not
    the servers, the limit at these speeds): (read fd, write fd)."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    return r, w


def transfer(lab, server, port, user, cipher, direction, form, nbytes, sink, source):
    """One transfer; returns (MiB/s, server CPU s)."""
    _, proc, _, _ = server
    dest = sink.port if direction == "up" else source.port
    if form == "W":
        cmd = lab.ssh(port, user, "-W", f"127.0.0.1:{dest}", cipher=cipher)
    else:
        cmd = lab.ssh(port, user, cipher=cipher) + ["nc", "127.0.0.1", str(dest)]
    cpu0 = tree_cpu(proc.pid)
    if direction == "up":
        r, w = big_pipe()
        head = subprocess.Popen(["head", "-c", str(nbytes), "/dev/zero"], stdout=w)
        ssh = subprocess.Popen(cmd, stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(r)
        os.close(w)
        try:
            got, first, last = sink.results.get(timeout=300)
        except queue.Empty:
            got, first, last = 0, None, None
        for p in (ssh, head):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    else:
        r, w = big_pipe()
        ssh = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=w, stderr=subprocess.PIPE)
        os.close(w)
        out = os.fdopen(r, "rb", buffering=0)
        buf = bytearray(4 << 20)
        got, first, last = 0, None, None
        deadline = time.monotonic() + 300
        while got < nbytes and time.monotonic() < deadline:
            n = out.readinto(buf)
            if not n:
                break
            if first is None:
                first = time.perf_counter()
            got += n
        last = time.perf_counter()
        out.close()
        try:
            ssh.wait(timeout=20)
        except subprocess.TimeoutExpired:
            ssh.kill()
            ssh.wait()
    time.sleep(0.2)  # let sshd reap its per-connection processes
    cpu = tree_cpu(proc.pid) - cpu0
    if got < nbytes or first is None or last <= first:
        err = ssh.stderr.read().decode(errors="replace").strip() if ssh.stderr else ""
        log(f"{server[0]} {cipher} {direction} {form}: only {got} bytes ({err})")
        return float("nan"), cpu
    return got / (last - first) / (1 << 20), cpu


def part_tunnel(s: Settings, form: str):
    runs = s.tunnel_runs if form == "W" else s.nc_runs
    nbytes = s.tunnel_bytes
    lab = Lab(KEEP)
    try:
        servers = jump_pair(lab)
        sink = DataServer("sink", nbytes)
        source = DataServer("source", nbytes)
        # One warm-up transfer each (page cache, first login, host key).
        sink.nbytes = 16 << 20
        for srv in servers:
            transfer(lab, srv, srv[2], srv[3], CIPHERS[0], "up", form, sink.nbytes, sink, source)
        sink.nbytes = nbytes
        rows, ratios, data = [], [], {}
        for cipher in CIPHERS:
            for direction in ("up", "down"):
                speeds = {name: [] for name, *_ in servers}
                cpus = {name: [] for name, *_ in servers}
                for i in range(runs):
                    order = servers if i % 2 == 0 else list(reversed(servers))
                    for srv in order:
                        mib, cpu = transfer(
                            lab, srv, srv[2], srv[3], cipher, direction, form, nbytes, sink, source
                        )
                        speeds[srv[0]].append(mib)
                        cpus[srv[0]].append(cpu / (nbytes / GIB))
                g, o = median(speeds["gatehouse"]), median(speeds["sshd"])
                r = ratio(g, o)
                ratios.append(r)
                short = cipher.split("@")[0]
                data[f"{short}/{direction}"] = {
                    "gatehouse": speeds["gatehouse"],
                    "sshd": speeds["sshd"],
                    "ratio": r,
                }
                rows.append(
                    [
                        short,
                        direction,
                        fmt(g),
                        fmt(o),
                        f"**{r:.2f}x**",
                        fmt(median(cpus["gatehouse"]), 2),
                        fmt(median(cpus["sshd"]), 2),
                        " ".join(fmt(x, 0) for x in speeds["gatehouse"]),
                        " ".join(fmt(x, 0) for x in speeds["sshd"]),
                    ]
                )
                log(f"{form} {short} {direction}: gatehouse {g:.0f} MiB/s, sshd {o:.0f} MiB/s")
        label = "`ssh -W`" if form == "W" else "`ssh HOST nc 127.0.0.1 PORT`"
        md = [
            f"{fmt(nbytes / (1 << 20), 0)} MiB per transfer through {label}, {runs} runs each "
            "(alternating which server goes first), median MiB/s at the receiving end; "
            "up = client to sink, down = source to client. CPU = the server's CPU seconds per GiB.",
            "",
            table(
                [
                    "cipher",
                    "dir",
                    "gatehouse MiB/s",
                    "sshd MiB/s",
                    "ratio",
                    "gatehouse CPU s/GiB",
                    "sshd CPU s/GiB",
                    "gatehouse runs",
                    "sshd runs",
                ],
                rows,
            ),
        ]
        return "\n".join(md), {"min_ratio": min(ratios), "rows": data}
    finally:
        lab.close()


# --------------------------------------------------------------------------
# (c) logins


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


def measure_logins(proc, cmd, total, width) -> dict:
    """`total` logins (`width` at a time) with the server's CPU time around them."""
    time.sleep(0.3)
    cpu0 = tree_cpu(proc.pid)
    wall, lat, fails, err = logins(cmd, total, width)
    time.sleep(0.5)  # sshd reaps its per-connection processes
    cpu = tree_cpu(proc.pid) - cpu0
    return {
        "per_s": len(lat) / wall,
        "p50": pct(lat, 50) * 1000,
        "p99": pct(lat, 99) * 1000,
        "cpu_ms": cpu * 1000 / max(1, total),
        "fails": fails,
        "err": err,
        "n": total,
    }


def part_logins(s: Settings):
    lab = Lab(KEEP)
    try:
        servers = jump_pair(lab)
        one = DataServer("one")
        res = {}
        for name, proc, port, user in servers:
            cmd = lab.ssh(port, user, "-W", f"127.0.0.1:{one.port}")
            dt, ok, err = one_login(cmd)  # warm-up
            if not ok:
                raise RuntimeError(f"{name}: login failed: {err}")
        for mode, total, width in (("sequential", s.seq_logins, 1), ("8 parallel", s.par_logins, s.par_width)):
            for name, proc, port, user in servers if mode == "sequential" else reversed(servers):
                cmd = lab.ssh(port, user, "-W", f"127.0.0.1:{one.port}")
                res[(mode, name)] = measure_logins(proc, cmd, total, width)
                log(f"logins {mode} {name}: {res[(mode, name)]}")
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
            "per login. The targets are judged on the key-only rows (the same work on both "
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
        for name, proc, cmd in servers:
            res[(mode, name)] = measure_logins(proc, cmd, total, width)
            log(f"logins {mode} {name}: {res[(mode, name)]}")
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


# --------------------------------------------------------------------------
# (d) memory


def open_idle(lab, port, user, count, width=8):
    """Open `count` idle authenticated connections (`ssh -N -f`), `width` at
    a time; returns how many succeeded."""
    cmd = lab.ssh(port, user, "-N", "-f", "-o", "ServerAliveInterval=0")
    ok = 0
    lock = threading.Lock()
    counter = iter(range(count))

    def worker():
        nonlocal ok
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            try:
                p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
                good = p.returncode == 0
            except subprocess.TimeoutExpired:
                good = False
            with lock:
                ok += good

    threads = [threading.Thread(target=worker) for _ in range(width)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ok


def part_memory(s: Settings):
    rows, growth = [], {}
    # One server at a time: 500 connections each, the other one not running.
    for name in ("gatehouse", "sshd"):
        lab = Lab(KEEP)
        try:
            if name == "gatehouse":
                proc, port, _ = lab.gatehouse("gatehouse", jump={})
                user = "bench"
            else:
                proc, port = lab.sshd("sshd")
                user = os.environ.get("USER") or "root"
            one = DataServer("one")
            one_login(lab.ssh(port, user, "-W", f"127.0.0.1:{one.port}"))  # warm-up
            held, mem = 0, {}
            for step in s.mem_steps:
                if step > held:
                    held += open_idle(lab, port, user, step - held)
                time.sleep(2)
                mem[step] = tree_mem(proc.pid) + (held,)
                log(f"memory {name} {step}: {mem[step]}")
            lo, hi = s.mem_steps[1], s.mem_steps[-1]
            g_rss = (mem[hi][0] - mem[lo][0]) / max(1, mem[hi][3] - mem[lo][3])
            g_pss = (mem[hi][1] - mem[lo][1]) / max(1, mem[hi][3] - mem[lo][3])
            g0_pss = (mem[lo][1] - mem[0][1]) / max(1, mem[lo][3] - mem[0][3])
            growth[name] = {"rss": g_rss, "pss": g_pss}
            for step in s.mem_steps:
                rss, pss, nproc, held_n = mem[step]
                rows.append(
                    [name, f"{held_n}", fmt(rss / 1024), fmt(pss / 1024), str(nproc), "", ""]
                )
            rows.append(
                [
                    name,
                    f"growth {lo}->{hi}",
                    "",
                    "",
                    "",
                    f"**{fmt(g_rss, 0)}** RSS, **{fmt(g_pss, 0)}** PSS",
                    f"{fmt(g0_pss, 0)} PSS (0->{lo})",
                ]
            )
        finally:
            lab.close()
    md = [
        "Idle authenticated connections held by `ssh -N -f` (no channel), opened 8 at a time, "
        "2 s settle before each reading. For sshd, RSS and PSS are summed over all sshd processes "
        "(the listener and the per-connection processes); RSS double-counts shared pages, PSS does not.",
        "",
        table(
            [
                "server",
                "connections",
                "RSS MiB",
                "PSS MiB",
                "processes",
                "KiB per added connection",
                "",
            ],
            rows,
        ),
    ]
    return "\n".join(md), growth


# --------------------------------------------------------------------------
# (e) DNS


def query_files(lab, records):
    rnd = random.Random(7)
    sets = {}
    names = []
    for k in range(20_000):
        i = rnd.randrange(records)
        names.append(f"r{i}.bench" if k % 2 == 0 else f"host{k % 97}.r{i}.bench")
    outside = [
        f"www{rnd.randrange(100000)}.{rnd.choice(['example.com', 'example.org', 'corp.example.net'])}"
        for _ in range(20_000)
    ]
    for kind, lines in (
        ("A in zone", [f"{n} A" for n in names]),
        ("AAAA (IPv4-only)", [f"{n} AAAA" for n in names]),
        ("A outside", [f"{n} A" for n in outside]),
    ):
        path = lab.dir / f"q-{records}-{len(sets)}.txt"
        path.write_text("\n".join(lines) + "\n")
        sets[kind] = path
    return sets


def dnsperf(port, qfile, seconds, extra, verbose=False):
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-l", str(seconds)]
    cmd += extra + (["-v"] if verbose else [])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = p.stdout
    r = {"cmd": " ".join(cmd[:-1] if verbose else cmd)}
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    r["qps"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"Queries lost:\s+(\d+)", out)
    r["lost"] = int(m.group(1)) if m else -1
    m = re.search(r"Average Latency \(s\):\s+([\d.]+)", out)
    r["avg_ms"] = float(m.group(1)) * 1000 if m else float("nan")
    m = re.search(r"Response codes:\s+(.*)", out)
    r["rcodes"] = re.sub(r" \(\d+\.\d+%\)", "", m.group(1)).strip() if m else "?"
    if verbose:
        lats = [
            float(x) * 1000
            for x in re.findall(r"^> \S+ \S+ \S+ ([\d.]+)$", out, flags=re.M)
        ]
        r["p50"], r["p99"] = pct(lats, 50), pct(lats, 99)
    return r


def part_dns(s: Settings):
    rows, summary = [], {}
    for records in s.dns_sizes:
        lab = Lab(KEEP)
        try:
            g, _, gport = lab.gatehouse("gatehouse", dns_records=records)
            d, dport = lab.dnsmasq("dnsmasq", records)
            sets = query_files(lab, records)
            servers = [("gatehouse", gport), ("dnsmasq", dport)]
            procs = {"gatehouse": g, "dnsmasq": d}
            qps_ratios = []
            for i, (kind, qfile) in enumerate(sets.items()):
                runs = {name: [] for name, _ in servers}
                for k in range(s.dns_runs):
                    order = servers if (i + k) % 2 == 0 else list(reversed(servers))
                    for name, port in order:
                        pid = procs[name].pid
                        cpu0 = tree_cpu(pid)
                        run = dnsperf(port, qfile, s.dns_seconds, DNSPERF_MAX)
                        run["cpu"] = (tree_cpu(pid) - cpu0) / s.dns_seconds
                        runs[name].append(run)
                        log(f"dns {records} {kind} {name}: {run['qps']:.0f} QPS, cpu {run['cpu']:.2f}")
                res = {}
                for name, port in servers:
                    rs = runs[name]
                    res[name] = {
                        "qps": median([r["qps"] for r in rs]),
                        "cpu": median([r["cpu"] for r in rs]),
                        "avg_ms": median([r["avg_ms"] for r in rs]),
                        "lost": median([r["lost"] for r in rs]),
                        "rcodes": rs[0]["rcodes"],
                        "runs": [r["qps"] for r in rs],
                    }
                    fixed = dnsperf(
                        port,
                        qfile,
                        s.dns_fixed_seconds,
                        ["-c", "8", "-T", "2", "-Q", str(DNS_FIXED_QPS)],
                        verbose=True,
                    )
                    res[name].update(p50=fixed["p50"], p99=fixed["p99"])
                r = ratio(res["gatehouse"]["qps"], res["dnsmasq"]["qps"])
                qps_ratios.append(r)
                for name in ("gatehouse", "dnsmasq"):
                    x = res[name]
                    rows.append(
                        [
                            fmt(records, 0),
                            kind,
                            name,
                            fmt(x["qps"], 0),
                            fmt(x["cpu"] * 100, 0),
                            fmt(x["qps"] / x["cpu"] / 1000, 0) if x["cpu"] else "n/a",
                            fmt(x["avg_ms"], 3),
                            x["lost"],
                            fmt(x["p50"], 3),
                            fmt(x["p99"], 3),
                            x["rcodes"],
                            " ".join(fmt(q / 1000, 0) for q in x["runs"]),
                        ]
                    )
                eff = ratio(
                    res["gatehouse"]["qps"] / res["gatehouse"]["cpu"],
                    res["dnsmasq"]["qps"] / res["dnsmasq"]["cpu"],
                )
                rows.append(
                    ["", "", "**ratio g/d**", f"**{r:.2f}x**", "", f"{eff:.2f}x", "", "", "", "", "", ""]
                )
            summary[records] = {"min_ratio": min(qps_ratios), "ratios": qps_ratios}
        finally:
            lab.close()
    md = [
        f"dnsperf {s.dns_seconds} s per run for the maximum (`{' '.join(DNSPERF_MAX)}`, UDP, "
        f"no EDNS), {s.dns_runs} runs per server and query set alternating which goes first, "
        "medians; dnsperf runs on the same 2 cores; "
        f"then {DNS_FIXED_SECONDS} s at a fixed "
        f"{DNS_FIXED_QPS:,} QPS (`-c 8 -T 2 -Q {DNS_FIXED_QPS} -v`) for p50/p99 latency. "
        "20,000 query lines per set (seeded random record numbers; half the in-zone names are "
        "one label below a record). Server CPU % = the server's CPU time during the max run "
        "(100 = one core); queries per CPU second = how much work each does per query, whatever "
        "share of the 2 cores dnsperf leaves it. 'lost' are the queries still in flight when "
        "dnsperf stops (about the same for both).",
        "",
        table(
            [
                "records",
                "queries",
                "server",
                "max QPS",
                "server CPU %",
                "k queries per CPU s",
                "avg ms at max",
                "lost",
                f"p50 ms at {DNS_FIXED_QPS // 1000}k",
                f"p99 ms at {DNS_FIXED_QPS // 1000}k",
                "response codes (first run)",
                "runs, k QPS",
            ],
            rows,
        ),
    ]
    return "\n".join(md), summary


# --------------------------------------------------------------------------
# (f) flood


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


async def _flood_one(port, stats):
    """One flood connection: hello, then wait for the server's ECDH reply."""
    outcome = "refused"
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0)), 3
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


async def _flood(port, rate, seconds):
    stats: dict = {}
    tasks = set()
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        n += 1
        t = asyncio.ensure_future(_flood_one(port, stats))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        # Keep the schedule: start connection n at n/rate seconds.
        await asyncio.sleep(max(0, start + n / rate - time.monotonic()))
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    stats["started"] = n
    stats["rate"] = n / (time.monotonic() - start)
    return stats


def part_flood(s: Settings):
    lab = Lab(KEEP)
    try:
        limits = {"trusted": ["127.0.0.2/32"]}  # default rate and pre-auth limits otherwise
        g, gport, _ = lab.gatehouse("gatehouse", jump={"limits": limits})
        o, oport = lab.sshd("sshd", max_startups=None)
        user = os.environ.get("USER") or "root"
        one = DataServer("one")
        servers = [("gatehouse", g, gport, "bench"), ("sshd", o, oport, user)]
        rows, summary = [], {}
        for name, proc, port, u in servers:
            cmd = lab.ssh(port, u, "-b", "127.0.0.2", "-W", f"127.0.0.1:{one.port}")
            one_login(cmd)
            phases = {}
            for phase in ("idle", "flood"):
                seconds = s.flood_idle_seconds if phase == "idle" else s.flood_seconds
                flooder = None
                if phase == "flood":
                    flooder = subprocess.Popen(
                        [sys.executable, __file__, "_flood", str(port), str(s.flood_rate), str(seconds)],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    time.sleep(1)  # let the flood build up
                cpu0 = tree_cpu(proc.pid)
                t_end = time.monotonic() + seconds - (1 if flooder else 0)
                lat, fails, errs = [], 0, []
                while time.monotonic() < t_end:
                    dt, ok, err = one_login(cmd, timeout=15)
                    if ok:
                        lat.append(dt * 1000)
                    else:
                        fails += 1
                        errs.append(err)
                cpu = tree_cpu(proc.pid) - cpu0
                flood_stats = {}
                if flooder:
                    out, _ = flooder.communicate(timeout=60)
                    flood_stats = json.loads(out)
                phases[phase] = (lat, fails, errs, flood_stats, cpu)
                log(f"flood {name} {phase}: p50 {pct(lat, 50):.1f} p99 {pct(lat, 99):.1f} fails {fails} {flood_stats}")
            (il, ifl, _, _, icpu), (fl, ffl, ferrs, fs, fcpu) = phases["idle"], phases["flood"]
            # A failed login counts as an infinitely slow one: p99 with more
            # than 1% failures is "failed", not the p99 of the lucky ones.
            ia = il + [float("inf")] * ifl
            fa = fl + [float("inf")] * ffl
            r = ratio(pct(fa, 99), pct(ia, 99))
            summary[name] = r
            flood_desc = ", ".join(
                f"{k} {v}" for k, v in sorted(fs.items()) if k not in ("started", "rate")
            )
            rows.append(
                [
                    name,
                    f"{len(il)} ok / {ifl} failed",
                    fmt(pct(ia, 50)),
                    fmt(pct(ia, 99)),
                    f"{len(fl)} ok / {ffl} failed",
                    fmt(pct(fa, 50)),
                    fmt(pct(fa, 99)),
                    f"**{fmt(r, 2)}x**" if r == r and r != float("inf") else "**failed**",
                    f"{fs.get('started', 0)} at {fs.get('rate', 0):.0f}/s: {flood_desc}"
                    + (f"; user's last error: `{ferrs[-1]}`" if ferrs else ""),
                    fmt(fcpu / max(1, s.flood_seconds - 1) * 100, 0),
                ]
            )
        md = [
            f"127.0.0.2 logs in sequentially (as in the logins part, `ssh -b 127.0.0.2`) for "
            f"{s.flood_idle_seconds} s idle, then for {s.flood_seconds - 1} s while 127.0.0.1 "
            f"floods at {s.flood_rate} connections/s (each: identification + KEXINIT + a random "
            "curve25519 key, waiting up to 3 s for the server's signed reply, then staying "
            f"{HOLD_AFTER_KEX:g} s more before closing). gatehouse: default "
            "limits, `trusted: [127.0.0.2/32]`; sshd: default MaxStartups 10:30:100.",
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


# --------------------------------------------------------------------------
# micro-benchmarks


def part_micro(s: Settings):
    rows = []
    for package, bench in (("gatehouse-dns", "zones"), ("gatehouse-jump", "grants")):
        cmd = ["cargo", "bench", "-q", "-p", package, "--bench", bench, "--", "--quick"]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
        for m in re.finditer(
            r"^(\S[^\n]*?)\s*\n?\s+time:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", p.stdout, flags=re.M
        ):
            rows.append([f"`{package}` {bench}", m.group(1).strip(), m.group(2)])
    md = [
        "`cargo bench -p gatehouse-dns --bench zones -- --quick` and "
        "`cargo bench -p gatehouse-jump --bench grants -- --quick`; median time per call.",
        "",
        table(["bench", "case", "time"], rows),
    ]
    return "\n".join(md), {}


# --------------------------------------------------------------------------
# Report


PARTS = {
    "dns": ("e. DNS: gatehouse vs dnsmasq (dnsperf)", part_dns),
    "tunnel": ("a. Tunnel throughput: `ssh -W`", lambda s: part_tunnel(s, "W")),
    "nc": ("b. Tunnel throughput: the `nc` exec form", lambda s: part_tunnel(s, "nc")),
    "logins": ("c. Logins per second", part_logins),
    "memory": ("d. Memory per idle authenticated connection", part_memory),
    "flood": ("f. Login flood from one address", part_flood),
    "micro": ("Micro-benchmarks (criterion)", part_micro),
}
ORDER = ["tunnel", "nc", "logins", "memory", "dns", "flood", "micro"]


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = run_text(["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12"])
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    rows = [
        ["date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")],
        ["machine", f"{os.cpu_count()} CPUs (nproc), {model}, {mem:.0f} GiB RAM"],
        ["kernel", platform.release()],
        ["load before", " ".join(f"{x:.2f}" for x in os.getloadavg())],
        ["gatehouse", f"commit {commit}, `cargo build --release` ({run_text(['rustc', '-V'])})"],
        ["OpenSSH", run_text(["ssh", "-V"]) + " (client and sshd)"],
        ["dnsmasq", run_text([DNSMASQ, "--version"]).splitlines()[0]],
        ["dnsperf", " ".join(re.findall(r"Version \S+", run_text(["dnsperf", "-H"])))],
        ["python", platform.python_version()],
    ]
    return table(["", ""], rows)


def targets(results):
    rows = []

    def line(name, measured, ok, target):
        rows.append([name, target, measured, "met" if ok else "**not met**"])

    for form, key in (("ssh -W", "tunnel"), ("nc form", "nc")):
        if key in results:
            rows_ = results[key]["rows"]
            worst = min(rows_, key=lambda k: rows_[k]["ratio"])
            r = rows_[worst]["ratio"]
            line(f"tunnel, {form}", f"lowest {r:.2f}x ({worst})", r >= 1.0, ">= 1.0x every cipher/direction")
    if "logins" in results:
        for mode, x in results["logins"].items():
            line(f"logins/s, {mode}", f"{x['rate_ratio']:.2f}x", x["rate_ratio"] >= 3, ">= 3x")
            line(f"server CPU/login, {mode}", f"{x['cpu_ratio']:.2f}x", x["cpu_ratio"] <= 1 / 3, "<= 0.33x")
    if "memory" in results:
        g = results["memory"]["gatehouse"]["rss"]
        line("RSS growth per idle connection", f"{g:.0f} KiB", g <= 180, "<= 180 KiB")
    if "dns" in results:
        for records, x in results["dns"].items():
            line(
                f"DNS QPS, {records:,} records",
                "lowest " + f"{x['min_ratio']:.2f}x (" + ", ".join(f"{r:.2f}" for r in x["ratios"]) + ")",
                x["min_ratio"] >= 1.25,
                ">= 1.25x",
            )
    if "flood" in results:
        g = results["flood"]["gatehouse"]
        o = results["flood"].get("sshd", float("nan"))
        line("flood p99 / idle p99", f"{fmt(g, 2)}x (sshd: {fmt(o, 2)})", g <= 1.5, "<= 1.5x")
    return table(["target", "wanted", "measured", ""], rows)


def main():
    ap = argparse.ArgumentParser(description="gatehouse vs OpenSSH sshd and dnsmasq (see the top of this file)")
    ap.add_argument("parts", nargs="*", help="parts to run (default: all): " + " ".join(ORDER))
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not figures")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders (logs, configs)")
    ap.add_argument("--list", action="store_true", help="list the parts")
    args = ap.parse_args()
    global KEEP
    KEEP = args.keep
    if args.list:
        for k in ORDER:
            print(f"{k:8} {PARTS[k][0]}")
        return 0
    parts = args.parts or ORDER
    for p in parts:
        if p not in PARTS:
            ap.error(f"unknown part {p!r}; parts: {' '.join(ORDER)}")
    s = Settings(args.quick)
    if not GATEHOUSE.exists():
        ap.error(f"{GATEHOUSE} missing: run `cargo build --release` (benches/run does)")
    started = time.monotonic()
    header = machine()
    sections, results = [], {}
    for p in ORDER:
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
        sections.append(
            f"### {title}\n\n{md}\n\n_({took:.0f} s; CPUs {busy:.0%} busy with other "
            "programs just before; load average after: "
            + " ".join(f"{x:.2f}" for x in os.getloadavg())
            + ")_\n"
        )
    total = time.monotonic() - started
    cmd = "benches/run" + ("" if not args.parts else " " + " ".join(args.parts)) + (" --quick" if args.quick else "")
    text = "\n".join(
        [
            BEGIN,
            f"Generated by `{cmd}` in {total / 60:.1f} min" + (" (**--quick: smoke test, not figures**)" if args.quick else "") + ".",
            "",
            header,
            "",
            "#### Targets (ratios gatehouse / reference, all from this one run)",
            "",
            targets(results),
            "",
            *sections,
            END,
        ]
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.md").write_text(text + "\n")
    (OUT / "results.json").write_text(json.dumps({k: v for k, v in results.items()}, default=str, indent=1))
    if set(parts) == set(ORDER) and not args.quick:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        if BEGIN in old and END in old:
            new = old[: old.index(BEGIN)] + text + old[old.index(END) + len(END) :]
        else:
            new = old + ("\n" if old else "") + text + "\n"
        RESULTS.write_text(new)
        log(f"wrote {RESULTS}")
    print(text)
    log(f"done in {total / 60:.1f} min; figures also in {OUT / 'results.md'}")
    return 0


KEEP = False

if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_flood":
        # The flooder, in its own process: `bench.py _flood PORT RATE SECONDS`.
        result = asyncio.run(_flood(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
        print(json.dumps(result))
        sys.exit(0)
    sys.exit(main())
