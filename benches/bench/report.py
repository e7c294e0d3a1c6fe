"""The report: machine info, the targets table, and where the text goes.

Owns: machine (what ran where), targets (each target from the issue
against this run's figures), section (one part's block), render (the
whole text between the markers) and save (target/bench/results.md and
results.json always; benches/RESULTS.md between its markers only for a
full, non-quick run; everything outside the markers is left as it is).
Must not: measure anything or change a figure; it formats what the parts
returned.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re

from .settings import DNSMASQ, GIB, ROOT
from .util import fmt, log, run_text, table

OUT = ROOT / "target" / "bench"
RESULTS = ROOT / "benches" / "RESULTS.md"
BEGIN = "<!-- benches/run: generated figures begin -->"
END = "<!-- benches/run: generated figures end -->"


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
                "lowest " + f"{x['min_ratio']:.2f}x (" + ", ".join(f"{r:.2f}" for r in x["ratios"]) + "; "
                "rows with different answers left out)",
                x["min_ratio"] >= 1.25,
                ">= 1.25x dnsmasq",
            )
            line(
                f"DNS QPS vs Knot, {records:,} records",
                "lowest " + f"{x['min_knot']:.2f}x (" + ", ".join(f"{r:.2f}" for r in x["knot_ratios"]) + ")",
                x["min_knot"] >= 1.0,
                ">= 1.0x Knot",
            )
            line(
                f"DNS CPU/query vs Knot, {records:,} records",
                f"highest {x['max_knot_cpu']:.2f}x",
                x["max_knot_cpu"] <= 1.0,
                "<= 1.0x Knot",
            )
    if "flood" in results:
        f = results["flood"]
        nan = float("nan")

        def x(r):  # "failed" (more than 1% of the logins failed) takes no "x"
            return fmt(r, 2) + ("x" if r != float("inf") else "")

        g = f.get("gatehouse", nan)
        o = f.get("sshd", nan)
        line("flood p99 / idle p99, as shipped", f"{x(g)} (sshd: {x(o)})", g <= 1.5, "<= 1.5x")
        g = f.get("gatehouse nothing exempt", nan)
        o = f.get("sshd MaxStartups 64", nan)
        line(
            "flood p99 / idle p99, same cap (64), nothing exempt, 64 flood addresses",
            f"{x(g)} (sshd MaxStartups 64: {x(o)})",
            g <= 1.5,
            "<= 1.5x",
        )
    return table(["target", "wanted", "measured", ""], rows)


def section(title, md, took, busy) -> str:
    """One part's block: its title, its text and how long it took."""
    return (
        f"### {title}\n\n{md}\n\n_({took:.0f} s; CPUs {busy:.0%} busy with other "
        "programs just before; load average after: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + ")_\n"
    )


def render(cmd, total, quick, header, results, sections) -> str:
    """The whole generated text, markers included."""
    return "\n".join(
        [
            BEGIN,
            f"Generated by `{cmd}` in {total / 60:.1f} min" + (" (**--quick: smoke test, not figures**)" if quick else "") + ".",
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


def save(text, results, full_run: bool):
    """target/bench/results.md and results.json; for a full run (every
    part, not --quick) also benches/RESULTS.md between its markers."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.md").write_text(text + "\n")
    (OUT / "results.json").write_text(json.dumps({k: v for k, v in results.items()}, default=str, indent=1))
    if full_run:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        if BEGIN in old and END in old:
            new = old[: old.index(BEGIN)] + text + old[old.index(END) + len(END) :]
        else:
            new = old + ("\n" if old else "") + text + "\n"
        RESULTS.write_text(new)
        log(f"wrote {RESULTS}")
