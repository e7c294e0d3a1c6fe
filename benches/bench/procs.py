"""/proc readings: CPU and memory of a server and all its processes, and
how busy the machine is.

Owns: tree_pids, tree_cpu (schedstat of live threads + exited threads +
reaped children), settle (wait until a server's per-connection processes
are reaped), tree_mem (RSS and PSS summed over the tree), established
(the connections a server holds), cpu_busy and wait_quiet (the
wait before each part for other programs to calm down).
Must not: start or stop processes; it only reads /proc.
"""

from __future__ import annotations

import os
import time

from .util import log

CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def _live_ticks(pid: int) -> int:
    """utime + stime (ticks) of the live threads of `pid`."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
                fields = stat[stat.rfind(")") + 2 :].split()
                total += int(fields[11]) + int(fields[12])
            except OSError:
                pass
    except OSError:
        pass
    return total


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and its live descendants, plus what they have
    reaped: every thread and process of the tree that ran is counted once,
    whether it is still alive, has exited or was reaped.
      - live threads: their schedstat (nanoseconds, exact);
      - exited threads of a live process (gatehouse's tokio blocking
        threads, a per-core runtime's workers): the process's utime + stime
        (which keeps them) minus its live threads' utime + stime, at tick
        precision; the same counting sshd's reaped children get below;
      - reaped children (sshd's per-connection processes, the shells and
        nc it runs): cutime + cstime, once the parent has waited for them
        (read after `settle`, not after a fixed sleep)."""
    procs = _proc_table()
    total = 0.0
    for pid in tree_pids(root, procs):
        threads = _tasks_ns(pid) / 1e9
        live = _live_ticks(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            fields = stat[stat.rfind(")") + 2 :].split()
            own = int(fields[11]) + int(fields[12])
            reaped = int(fields[13]) + int(fields[14])
            total += threads + (max(0, own - live) + reaped) / CLK_TCK
        except OSError:
            total += threads
    return total


def settle(root: int, baseline: int = 1, patience: float = 10.0) -> int:
    """Wait (polling every 20 ms, at most `patience` s) until the tree under
    `root` is back to `baseline` processes (1: the listener alone, as
    every server here runs when no client is connected), i.e. every per-connection
    process has exited and been reaped into its parent's cutime, so that a
    tree_cpu reading after it holds their CPU. Returns the processes left
    (more than `baseline`: the caller's reading misses some, and says so)."""
    deadline = time.monotonic() + patience
    while True:
        n = len(tree_pids(root))
        if n <= baseline or time.monotonic() >= deadline:
            if n > baseline:
                log(f"pid {root}: {n} processes still alive after {patience:g} s (baseline {baseline})")
            return n
        time.sleep(0.02)


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


def established(port: int) -> int:
    """Server-side TCP connections in ESTABLISHED state on local port `port`
    (IPv4, /proc/net/tcp): how many connections a server really holds."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "01" and int(local.split(":")[1], 16) == port:
                n += 1
    return n


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
