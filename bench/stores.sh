#!/usr/bin/env bash
# `make bench-stores`: measures a local cluster (loopback only, bounded in time) on each store —
# SQLite, then Redis (a redis-server of the bench's own; skipped when redis-server is not
# installed) — appends every line to bench/results/results.txt, and prints this run's
# numbers side by side. Numbers, not assertions: compare runs on one box.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
out=bench/results/results.txt
mkdir -p bench/results
run_id="$(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "# $run_id" >> "$out"
stores=${STORES:-sqlite redis}
if ! command -v redis-server >/dev/null; then
    echo "redis-server is not installed: measuring SQLite only (apt-get install redis-server)" >&2
    stores=sqlite
fi
for store in $stores; do
    export HERALD_E2E_STORE=$store
    target/release/herald-bench --out "$out" addressed --users "${USERS:-1000}" \
        --requests "${REQUESTS:-100}" --recipients "${RECIPIENTS:-100}"
    target/release/herald-bench --out "$out" idle-sockets --sockets "${IDLE_SOCKETS:-5000}"
    for rate in ${RATES:-20 200}; do
        for target in mozilla channel; do
            target/release/herald-bench --out "$out" latency --target "$target" \
                --subscribers "${SUBSCRIBERS:-1000}" --rate "$rate" --seconds "${SECONDS_:-10}"
        done
    done
done

# This run's lines (after its header), one row per scenario, one column per store.
python3 - "$out" "# $run_id" <<'PY' | tee -a "$out"
import sys
path, header = sys.argv[1], sys.argv[2]
lines = open(path).read().splitlines()
lines = lines[len(lines) - 1 - lines[::-1].index(header) + 1:]
# Which measures a row shows, per benchmark.
shown = {
    "addressed": ["deliveries_per_s", "p50", "p99", "webhook_events_per_s", "lost"],
    "idle-sockets": ["per_socket", "opened_in"],
    "latency": ["p50", "p99", "post_p50", "post_p99", "deliveries"],
}
rows, stores = {}, []
for line in lines:
    words = line.split()
    if not words or not words[0].startswith("store="):
        continue
    store, bench = words[0][6:], words[1]
    fields = dict(w.split("=", 1) for w in words[2:] if "=" in w)
    scenario = bench + " " + " ".join(
        f"{k}={v}" for k, v in fields.items() if k in ("target", "rate", "sockets", "users"))
    measures = " ".join(f"{k}={fields[k]}" for k in shown.get(bench, []) if k in fields)
    rows.setdefault(scenario, {})[store] = measures
    if store not in stores:
        stores.append(store)
print("## side by side: " + " | ".join(stores))
for scenario, by_store in rows.items():
    print(scenario)
    for store in stores:
        print(f"  {store:7} {by_store.get(store, '-')}")
PY
