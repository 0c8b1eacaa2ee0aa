#!/usr/bin/env bash
# `make bench`: measures a local cluster (loopback only, bounded in time) and appends the
# numbers to bench/results/results.txt. Numbers, not assertions: compare runs on one box.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
out=bench/results/results.txt
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" >> "$out"
target/release/herald-bench --out "$out" addressed --users "${USERS:-1000}" \
    --requests "${REQUESTS:-100}" --recipients "${RECIPIENTS:-100}"
target/release/herald-bench --out "$out" idle-sockets --sockets "${IDLE_SOCKETS:-5000}"
for rate in ${RATES:-20 200}; do
    for target in mozilla channel; do
        target/release/herald-bench --out "$out" latency --target "$target" \
            --subscribers "${SUBSCRIBERS:-1000}" --rate "$rate" --seconds "${SECONDS_:-10}"
    done
done
