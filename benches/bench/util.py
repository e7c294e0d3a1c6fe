"""Small helpers with no state: logging, statistics and Markdown tables.

Owns: log (stderr, "[bench]" prefix), median, pct (nearest rank), ratio,
fmt (n/a for NaN, "failed" for infinity), table, run_text.
Must not: start servers, read /proc or know about any part; everything
here is a pure function of its arguments (log and run_text aside).
"""

from __future__ import annotations

import statistics
import subprocess
import sys


def log(*args):
    print("[bench]", *args, file=sys.stderr, flush=True)


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
