#!/usr/bin/env python3
"""Writes BENCHMARKS.md and the raw JSON of one `make bench` run (bench/run.sh).

Usage: report.py <results.jsonl> <raw.json> <BENCHMARKS.md> <herald rev> <nchan version> <sizes>

Each line of results.jsonl is one `herald-load` result (e2e/src/load.rs): `target`
(herald-mozilla, herald-channel, nchan), `scenario` (fanout, throughput, connect), its
parameters and measures. One table per scenario, Herald and Nchan side by side, then each
Herald side's ratio to Nchan against the target of issue "Faster than Nchan".
"""

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

lines_path, raw_path, md_path, rev, nchan_version, sizes = sys.argv[1:7]
results = [json.loads(line) for line in open(lines_path) if line.strip()]
json.dump(results, open(raw_path, "w"), indent=1)


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(open("/proc/meminfo").readline().split()[1])
        mem = f", {kb / 1048576:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, {platform.system()} {platform.release()}"


def nginx_version():
    try:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        return out.stderr.strip().split("/")[-1]
    except OSError:
        return "not installed"


NAMES = {"herald-mozilla": "Herald (Mozilla path)", "herald-channel": "Herald (native channel)",
         "nchan": "Nchan"}


def by(scenario, **params):
    return {r["target"]: r for r in results
            if r["scenario"] == scenario and all(r.get(k) == v for k, v in params.items())}


def ratio(herald, nchan, key, higher_is_better):
    h, n = herald.get(key), nchan.get(key)
    if not h or not n:
        return None
    return h / n if higher_is_better else n / h


out = []
w = out.append
w("# Benchmarks: Herald and Nchan side by side")
w("")
w(f"Written by `make bench` (bench/run.sh) on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
w(f"Machine: {machine()}. The load tool and the server share it: compare ratios, not absolutes.")
w(f"Versions: Herald `{rev}` (release build, circus.ini: 2 API, 2 edges, 1 router, "
  f"SQLite, every publish durable); nginx {nginx_version()} with Nchan {nchan_version} "
  "(bench/nchan.conf: 2 workers, memory store, nothing durable).")
w(f"Sizes: `{sizes}`. Raw results: bench/results/*.json.")
w("")
w("Every scenario runs `target/release/herald-load --target <side> --server-pid <pid> "
  "<scenario> …` over loopback. Latency is publish→deliver from the send time inside the "
  "payload, over every (message, socket) pair; `lost` counts deliveries that did not arrive "
  "within 10 s of the last publish, `dup` deliveries that arrived twice; CPU is the server "
  "processes' user+system time (with their children) during the run.")
w("")

verdicts = []


def table(title, rows, columns):
    w(f"## {title}")
    w("")
    w("| side | " + " | ".join(c[0] for c in columns) + " |")
    w("|---|" + "---|" * len(columns))
    for target in ("herald-mozilla", "herald-channel", "nchan"):
        r = rows.get(target)
        if r:
            w(f"| {NAMES[target]} | " + " | ".join(c[1](r) for c in columns) + " |")
    w("")


def verdict(title, rows, key, higher_is_better, goal, unit):
    nchan = rows.get("nchan")
    for target in ("herald-mozilla", "herald-channel"):
        herald = rows.get(target)
        if not herald or not nchan:
            continue
        r = ratio(herald, nchan, key, higher_is_better)
        if r is None:
            continue
        met = "met" if r >= goal else "not met"
        line = (f"- {title}, {NAMES[target]}: {herald[key]} vs {nchan[key]} {unit} → "
                f"{r:.2f}× Nchan (target ≥ {goal}×): **{met}**")
        w(line)
        verdicts.append(line)
    w("")


def fmt(key, digits=1):
    return lambda r: "-" if r.get(key) is None else f"{r[key]:.{digits}f}" if isinstance(r[key], float) else str(r[key])


loss = lambda r: f"{r.get('lost', 0)} / {r.get('duplicates', 0)}"
fanouts = sorted({r["rate"] for r in results if r["scenario"] == "fanout"})
for rate in fanouts:
    rows = by("fanout", rate=rate)
    subs = next(iter(rows.values()))["subscribers"]
    table(f"Fan-out: 1 channel × {subs} sockets, {rate} publishes/s", rows, [
        ("p50 ms", fmt("p50_ms", 2)), ("p99 ms", fmt("p99_ms", 2)), ("max ms", fmt("max_ms", 1)),
        ("deliveries/s", fmt("deliveries_per_s", 0)), ("deliveries", fmt("deliveries")),
        ("lost / dup", loss), ("server CPU s", fmt("server_cpu_s", 2)),
    ])
    if rate == max(fanouts) and len(fanouts) > 1:
        verdict(f"saturation deliveries/s at {rate}/s offered", rows, "deliveries_per_s", True, 1.5, "/s")
    else:
        verdict(f"p99 at {rate}/s (lower is better)", rows, "p99_ms", False, 1.0, "ms")

rows = by("throughput")
if rows:
    first = next(iter(rows.values()))
    table(f"Publish throughput: {first['channels']} channels × 1 socket, unpaced, "
          f"{first['in_flight']} in flight", rows, [
        ("publishes/s", fmt("publishes_per_s", 0)),
        ("server CPU µs/publish", fmt("server_cpu_us_per_publish", 1)),
        ("p50 ms", fmt("p50_ms", 2)), ("p99 ms", fmt("p99_ms", 2)), ("lost / dup", loss),
        ("failed publishes", fmt("publish_failed")),
    ])
    verdict("unpaced publishes/s", rows, "publishes_per_s", True, 0.5, "/s")

rows = by("connect")
if rows:
    first = next(iter(rows.values()))
    table(f"Connect: {first['sockets']} idle sockets", rows, [
        ("connect s", fmt("connect_s", 2)), ("connects/s", fmt("connects_per_s", 0)),
        ("RSS per socket B", fmt("rss_per_socket")),
    ])
    verdict("connect rate", rows, "connects_per_s", True, 1.0, "/s")
    for target in ("herald-mozilla", "herald-channel"):
        r = rows.get(target)
        if r:
            kib = r["rss_per_socket"] / 1024
            line = (f"- RSS per idle socket, {NAMES[target]}: {kib:.2f} KiB "
                    f"(target ≤ 8 KiB): **{'met' if kib <= 8 else 'not met'}**")
            w(line)
            verdicts.append(line)
    w("")

w("## Against the targets")
w("")
out.extend(verdicts or ["- (no side-by-side results in this run)"])
w("")
open(md_path, "w").write("\n".join(out))
print("\n".join(verdicts))
