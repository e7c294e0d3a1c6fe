"""Parts (a) tunnel and (b) nc: throughput through `ssh -W` and through
the legacy `ssh HOST nc 127.0.0.1 PORT` form.

Owns: big_pipe, transfer (one timed transfer and the server's CPU around
it), part_tunnel (both forms: warm-up, runs per cipher and direction,
alternating which server goes first, the table).
Must not: start servers other than through Lab and DataServer, or write
the report.
"""

from __future__ import annotations

import fcntl
import os
import queue
import subprocess
import time

from .lab import DataServer, Lab, jump_pair
from .procs import settle, tree_cpu
from .settings import CIPHERS, GIB, Settings
from .util import fmt, log, median, ratio, table

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, Linux; named in Python >= 3.10 only


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
    settle(proc.pid)
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
    settle(proc.pid)  # sshd's per-connection processes reaped: in its cutime
    cpu = tree_cpu(proc.pid) - cpu0
    if got < nbytes or first is None or last <= first:
        err = ssh.stderr.read().decode(errors="replace").strip() if ssh.stderr else ""
        log(f"{server[0]} {cipher} {direction} {form}: only {got} bytes ({err})")
        return float("nan"), cpu
    return got / (last - first) / (1 << 20), cpu


def part_tunnel(s: Settings, form: str):
    runs = s.tunnel_runs if form == "W" else s.nc_runs
    nbytes = s.tunnel_bytes
    lab = Lab(s.keep)
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
