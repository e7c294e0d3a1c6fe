"""Part (d) memory: RSS and PSS per idle authenticated connection.

Owns: open_idle (`ssh -N -f`, N at a time) and part_memory (one server at
a time, readings at each step of Settings.mem_steps, growth per connection;
the part fails when a server holds fewer connections than the step asks:
counted in /proc/net/tcp, not from the clients' exit codes).
Must not: start servers other than through Lab, or write the report.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

from .lab import DataServer, Lab
from .logins import one_login
from .procs import established, tree_mem
from .settings import Settings
from .util import fmt, log, table


# gatehouse's max_connections_per_user here: above the largest step (500).
MEM_PER_USER = 1000


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
        lab = Lab(s.keep)
        try:
            if name == "gatehouse":
                # Every connection is the one user `bench`: the default
                # max_connections_per_user (16) would refuse the 17th.
                limits = {"trusted": ["127.0.0.0/8"], "max_connections_per_user": MEM_PER_USER}
                proc, port, _ = lab.gatehouse("gatehouse", jump={"limits": limits})
                user = "bench"
            else:
                proc, port = lab.sshd("sshd")
                user = os.environ.get("USER") or "root"
            one = DataServer("one")
            one_login(lab.ssh(port, user, "-W", f"127.0.0.1:{one.port}"))  # warm-up
            mem = {}
            for step in s.mem_steps:
                have = established(port)
                if step > have:
                    open_idle(lab, port, user, step - have)
                time.sleep(2)
                # What the server holds, counted on its side of the sockets
                # (ssh -f exits 0 once authenticated, whatever happens after).
                held = established(port)
                if held != step:
                    raise RuntimeError(f"{name} holds {held} connections where {step} were opened")
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
        f"2 s settle before each reading; the connections column is what the server holds "
        f"(ESTABLISHED sockets on its port; the part fails if it differs from the step). "
        f"gatehouse: one user, `max_connections_per_user: {MEM_PER_USER}` (the default, 16, would "
        "refuse the 17th). For sshd, RSS and PSS are summed over all sshd processes "
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
