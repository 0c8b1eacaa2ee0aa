#!/usr/bin/env bash
# `make bench`: Herald and Nchan side by side, one after the other on this box, driven by
# the same load tool (`herald-load`, e2e/src/load.rs) over loopback only, every scenario
# bounded in time. Herald runs as `make run` does — circus.ini, SQLite, every publish
# durable — with a state directory of its own; Nchan 1.3.6 runs from bench/nchan.conf (two
# workers, its memory store). Writes BENCHMARKS.md (machine, versions, commands, one table
# per scenario with the ratio) and bench/results/<run>.json (every raw result).
#
# Scenario sizes can be lowered for a quick look: SUBSCRIBERS, RATES, SATURATION_RATE,
# SECONDS_, CHANNELS, IN_FLIGHT, IDLE_SOCKETS; TARGETS picks the sides (default
# "herald-mozilla herald-channel nchan"). Nchan is installed here when missing and this
# runs as root (apt-get; never in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

subscribers=${SUBSCRIBERS:-1000}
rates=${RATES:-20 200}
saturation=${SATURATION_RATE:-600}
seconds=${SECONDS_:-10}
channels=${CHANNELS:-1000}
in_flight=${IN_FLIGHT:-32}
idle=${IDLE_SOCKETS:-10000}
targets=${TARGETS:-herald-mozilla herald-channel nchan}
nchan_port=${NCHAN_PORT:-8890}

cargo build --release --bins
run_id="$(date -u +%Y%m%dT%H%M%SZ)"
results=bench/results/$run_id.jsonl
mkdir -p bench/results var/log
work=$(mktemp -d)
circusd=""
nginx=""
cleanup() {
    [ -n "$circusd" ] && kill -TERM "$circusd" 2>/dev/null && wait "$circusd" 2>/dev/null
    [ -n "$nginx" ] && kill -TERM "$nginx" 2>/dev/null && wait "$nginx" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

free() { ! python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.3); sys.exit(0 if s.connect_ex(('127.0.0.1', int(sys.argv[1]))) == 0 else 1)" "$1"; }
answers() { python3 - "$1" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
    sys.exit(0)
except urllib.error.HTTPError:
    sys.exit(0)
except Exception:
    sys.exit(1)
PY
}
wait_for() { # url, what
    for _ in $(seq 1 150); do answers "$1" && return 0; sleep 0.2; done
    echo "$2 did not answer at $1" >&2; exit 1
}

# The scenarios, each one herald-load run (a JSON line in $results).
scenarios() { # target, server pid, extra herald-load arguments…
    local target=$1 pid=$2; shift 2
    local load=(target/release/herald-load --target "$target" --server-pid "$pid" --out "$results" "$@")
    for rate in $rates $saturation; do
        "${load[@]}" fanout --subscribers "$subscribers" --rate "$rate" --seconds "$seconds"
    done
    "${load[@]}" throughput --channels "$channels" --in-flight "$in_flight" --seconds "$seconds"
    "${load[@]}" connect --sockets "$idle"
}

herald_targets=""
for t in $targets; do case $t in herald-*) herald_targets="$herald_targets $t";; esac; done
if [ -n "$herald_targets" ]; then
    for port in 5001 8888 5555 5556; do
        free $port || { echo "port $port is taken (is make run up?): stop it first" >&2; exit 1; }
    done
    # Durable as by default; the dev key's rate limit lifted so that it measures Herald,
    # not the limiter.
    HERALD__STORE__SQLITE_PATH="$work/herald.db" \
    HERALD__STORE__SQLITE_LIVE_PATH="$work/herald-live.db" \
    HERALD__API__RATE_LIMIT_PER_SECOND=1000000 HERALD__API__RATE_LIMIT_BURST=1000000 \
        setsid .venv/bin/circusd circus.ini &
    circusd=$!
    wait_for http://127.0.0.1:5001/health "herald-api"
    wait_for http://127.0.0.1:8888/health "herald-websockets"
    for t in $herald_targets; do scenarios "$t" "$circusd"; done
    kill -TERM "$circusd"; wait "$circusd" 2>/dev/null || true; circusd=""
fi

case " $targets " in *" nchan "*)
    if [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
        if [ "$(id -u)" = 0 ] && [ -z "${CI:-}" ]; then
            apt-get install -y nginx libnginx-mod-nchan >/dev/null \
                || { apt-get update >/dev/null && apt-get install -y nginx libnginx-mod-nchan >/dev/null; }
        else
            echo "Nchan is not installed (apt-get install nginx libnginx-mod-nchan): skipping it" >&2
        fi
    fi
    if [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
        free "$nchan_port" || { echo "port $nchan_port is taken: set NCHAN_PORT" >&2; exit 1; }
        mkdir -p "$work/nchan"
        sed -e "s|@PREFIX@|$work/nchan|g" -e "s|@PORT@|$nchan_port|g" bench/nchan.conf > "$work/nchan/nginx.conf"
        nginx -p "$work/nchan" -c "$work/nchan/nginx.conf" &
        nginx=$!
        wait_for "http://127.0.0.1:$nchan_port/pub?id=ready" "nginx (Nchan)"
        scenarios nchan "$nginx" --nchan "http://127.0.0.1:$nchan_port"
        kill -TERM "$nginx"; wait "$nginx" 2>/dev/null || true; nginx=""
    fi
;; esac

nchan_version=$(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo "not installed")
python3 bench/report.py "$results" "bench/results/$run_id.json" BENCHMARKS.md \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$nchan_version" \
    "SUBSCRIBERS=$subscribers RATES='$rates' SATURATION_RATE=$saturation SECONDS_=$seconds CHANNELS=$channels IN_FLIGHT=$in_flight IDLE_SOCKETS=$idle"
rm -f "$results"
echo "wrote BENCHMARKS.md and bench/results/$run_id.json"
