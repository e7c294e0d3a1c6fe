"""Part (e) dns: gatehouse vs dnsmasq under dnsperf.

Owns: query_files (the seeded query sets), dnsperf (one run, parsed) and
part_dns (max QPS runs alternating which server goes first, the fixed-rate
latency run, the table).
Must not: start servers other than through Lab, or write the report.
"""

from __future__ import annotations

import random
import re
import subprocess

from .lab import Lab
from .procs import tree_cpu
from .settings import DNS_FIXED_QPS, DNS_FIXED_SECONDS, DNSPERF_MAX, Settings
from .util import fmt, log, median, pct, ratio, table


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
        lab = Lab(s.keep)
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
