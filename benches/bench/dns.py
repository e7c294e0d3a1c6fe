"""Part (e) dns: gatehouse vs dnsmasq, Knot DNS and NSD under dnsperf.

Owns: query_files (the seeded query sets), dnsperf (one run, parsed),
dominant/compared (whether two servers gave the same kind of answer, so
that a QPS ratio means something) and part_dns (a warm-up, max QPS runs in both client shapes, rotating which server goes
first, the fixed-rate latency run, the table).
Must not: start servers other than through Lab, or write the report.
"""

from __future__ import annotations

import random
import re
import subprocess

from .lab import Lab
from .procs import tree_cpu
from .settings import DNS_FIXED_QPS, DNS_FIXED_SECONDS, DNSPERF_SHAPES, Settings
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
    # The shape: 100,000 distinct names one label below a record
    # (random subdomains, as a cache-busting flood or many clients send).
    random_sub = [f"x{k}.r{rnd.randrange(records)}.bench" for k in range(100_000)]
    rnd.shuffle(random_sub)
    for kind, lines in (
        ("A in zone", [f"{n} A" for n in names]),
        ("A random subdomains", [f"{n} A" for n in random_sub]),
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


def dominant(rcodes: str) -> str:
    """The response code most answers had, from dnsperf's `Response codes`
    line as dnsperf() keeps it ("NOERROR 19990, REFUSED 10")."""
    counts = [(int(n), code) for code, n in re.findall(r"([A-Z]+) (\d+)", rcodes)]
    return max(counts)[1] if counts else "?"


def compared(mine: dict, theirs: dict, name: str) -> str | None:
    """None when both servers gave the same kind of answer (a QPS ratio
    means something); otherwise what the table says instead of a ratio,
    e.g. "different answers (dnsmasq REFUSED)": a REFUSED costs a server
    less than a NODATA with its SOA, so the speeds are not comparable."""
    a, b = dominant(mine["rcodes"]), dominant(theirs["rcodes"])
    return None if a == b else f"different answers ({name} {b})"


def part_dns(s: Settings):
    rows, summary = [], {}
    for records in s.dns_sizes:
        lab = Lab(s.keep)
        try:
            g, _, gport = lab.gatehouse("gatehouse", dns_records=records)
            d, dport = lab.dnsmasq("dnsmasq", records)
            k, kport = lab.knot("knot", records)
            n, nport = lab.nsd("nsd", records)
            sets = query_files(lab, records)
            servers = [("gatehouse", gport), ("dnsmasq", dport), ("knot", kport), ("nsd", nport)]
            procs = {"gatehouse": g, "dnsmasq": d, "knot": k, "nsd": n}
            ratios = {"dnsmasq": [], "knot": [], "knot_cpu": []}
            # Warm-up: one short run per server (caches, first packets).
            for name, port in servers:
                dnsperf(port, sets["A in zone"], 1, DNSPERF_SHAPES["one port"])
            for i, (kind, qfile) in enumerate(sets.items()):
                for shape, flags in DNSPERF_SHAPES.items():
                    runs = {name: [] for name, _ in servers}
                    for r in range(s.dns_runs):
                        turn = (i + r) % len(servers)
                        order = servers[turn:] + servers[:turn]
                        for name, port in order:
                            pid = procs[name].pid
                            cpu0 = tree_cpu(pid)
                            run = dnsperf(port, qfile, s.dns_seconds, flags)
                            run["cpu"] = (tree_cpu(pid) - cpu0) / s.dns_seconds
                            runs[name].append(run)
                            log(f"dns {records} {kind} {shape} {name}: {run['qps']:.0f} QPS, cpu {run['cpu']:.2f}")
                    res = {}
                    for name, port in servers:
                        rs = runs[name]
                        qps = median([r["qps"] for r in rs])
                        cpu = median([r["cpu"] for r in rs])
                        res[name] = {
                            "qps": qps,
                            "cpu": cpu,
                            # microseconds of server CPU per query
                            "us": cpu / qps * 1e6 if qps else float("nan"),
                            "lost": median([r["lost"] for r in rs]),
                            "rcodes": rs[0]["rcodes"],
                            "runs": [r["qps"] for r in rs],
                        }
                        if shape == "many ports" and kind == "A in zone":
                            fixed = dnsperf(
                                port,
                                qfile,
                                s.dns_fixed_seconds,
                                ["-c", "8", "-T", "2", "-Q", str(DNS_FIXED_QPS)],
                                verbose=True,
                            )
                            res[name].update(p50=fixed["p50"], p99=fixed["p99"])
                    gq = res["gatehouse"]
                    differ = {o: compared(gq, res[o], o) for o in ("dnsmasq", "knot", "nsd")}
                    # Only rows where both answered alike count towards the targets.
                    if differ["dnsmasq"] is None:
                        ratios["dnsmasq"].append(ratio(gq["qps"], res["dnsmasq"]["qps"]))
                    if differ["knot"] is None:
                        ratios["knot"].append(ratio(gq["qps"], res["knot"]["qps"]))
                        ratios["knot_cpu"].append(ratio(gq["us"], res["knot"]["us"]))
                    for name, _ in servers:
                        x = res[name]
                        rows.append(
                            [
                                fmt(records, 0),
                                kind,
                                shape,
                                name,
                                fmt(x["qps"], 0),
                                fmt(x["cpu"] * 100, 0),
                                fmt(x["us"], 1),
                                x["lost"],
                                fmt(x.get("p50", float("nan")), 3),
                                fmt(x.get("p99", float("nan")), 3),
                                x["rcodes"],
                                " ".join(fmt(q / 1000, 0) for q in x["runs"]),
                            ]
                        )
                    rows.append(
                        [
                            "",
                            "",
                            "",
                            "**g / dnsmasq, knot, nsd**",
                            "**" + ", ".join(differ[o] or f"{ratio(gq['qps'], res[o]['qps']):.2f}x" for o in ("dnsmasq", "knot", "nsd")) + "**",
                            "",
                            ", ".join(differ[o] or f"{ratio(gq['us'], res[o]['us']):.2f}x" for o in ("dnsmasq", "knot", "nsd")),
                            "",
                            "",
                            "",
                            "",
                            "",
                        ]
                    )
            summary[records] = {
                "min_ratio": min(ratios["dnsmasq"]),
                "ratios": ratios["dnsmasq"],
                "min_knot": min(ratios["knot"]),
                "knot_ratios": ratios["knot"],
                "max_knot_cpu": max(ratios["knot_cpu"]),
            }
        finally:
            lab.close()
    shapes = "; ".join(f"{shape}: `{' '.join(flags)}`" for shape, flags in DNSPERF_SHAPES.items())
    md = [
        f"dnsperf {s.dns_seconds} s per run for the maximum, UDP, no EDNS, in two client shapes "
        f"({shapes}: stub resolvers randomise source ports, so the second is what a laptop fleet "
        f"sends), {s.dns_runs} runs per server, shape and query set, rotating which server goes "
        "first, medians; dnsperf runs on the same 2 cores. Knot DNS (`udp-workers: 2`) and NSD "
        "(`server-count: 2`, `rrl-ratelimit: 0`) serve the same zone as a zone file (`rN` and "
        "`*.rN` per record), gatehouse with `rate_limit: { per_network: off }` (dnsperf is one "
        "network sending far more than any client). Then, for in-zone names in the many-port "
        f"shape, {DNS_FIXED_SECONDS} s at a fixed {DNS_FIXED_QPS:,} QPS "
        f"(`-c 8 -T 2 -Q {DNS_FIXED_QPS} -v`) for p50/p99 latency. Query sets: 20,000 lines "
        "(seeded random record numbers; half the in-zone names one label below a record), and "
        "100,000 distinct random names one label below a record. Server CPU % = the server's CPU "
        "time during the max run (100 = one core); µs CPU/query = that CPU over the queries "
        "answered: the work per query, whatever share of the cores dnsperf leaves. The ratio "
        "rows: gatehouse's QPS over each other server's, and its CPU per query over theirs "
        "(lower is better); where the two answered with different response codes (dnsmasq "
        "REFUSES an AAAA query for a name it holds only an A for, where the others answer "
        "NODATA), the row says \"different answers\" instead of a ratio, and the targets leave "
        "it out. Each server gets a 1 s warm-up run first.",
        "",
        table(
            [
                "records",
                "queries",
                "client",
                "server",
                "max QPS",
                "server CPU %",
                "µs CPU/query",
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
