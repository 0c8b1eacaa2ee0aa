#!/usr/bin/env bash
# `make run`: starts the whole Herald cluster under circusd from the repository root, waits
# until it answers, prints where everything listens and the dev credentials, then stays in
# the foreground. Ctrl-C (or SIGTERM) stops circusd, which drains every process.
# `make run-redis` runs the Redis layout instead (CIRCUS_INI=etc/circus-redis.ini).
set -euo pipefail
cd "$(dirname "$0")/.."
ini=${CIRCUS_INI:-circus.ini}
mkdir -p var/log
state="state in var/herald.db"
if [ "$ini" = etc/circus-redis.ini ]; then
    if ! command -v redis-server >/dev/null; then
        echo "redis-server is not installed (Debian: apt-get install redis-server)" >&2
        exit 1
    fi
    mkdir -p var/redis
    state="state in Redis on 127.0.0.1:6390, data in var/redis/"
fi

# The cluster's ports must be free: otherwise another cluster would answer the health
# checks below while this one's circusd fails to bind.
for port in 5001 8888 5555 5556; do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.3); sys.exit(0 if s.connect_ex(('127.0.0.1', $port)) == 0 else 1)"; then
        echo "port $port on 127.0.0.1 is in use (is another Herald cluster running?): stop it first" >&2
        exit 1
    fi
done

# Own session, so Ctrl-C reaches only this script, which then stops circusd in order.
setsid .venv/bin/circusd "$ini" &
circusd=$!
stop() {
    # Once, however many signals arrive (make forwards the one the group already got).
    trap - INT TERM
    echo
    echo "stopping the cluster (circusd pid $circusd)..."
    kill -TERM "$circusd" 2>/dev/null || true
    wait "$circusd" 2>/dev/null || true
    echo "stopped."
    exit 0
}
trap stop INT TERM

healthy() { python3 - "$1" <<'PY'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}
up=no
for _ in $(seq 1 150); do
    if ! kill -0 "$circusd" 2>/dev/null; then
        echo "circusd exited; see var/log/circusd.log" >&2
        exit 1
    fi
    if healthy http://127.0.0.1:5001/health && healthy http://127.0.0.1:8888/health; then
        up=yes
        break
    fi
    sleep 0.2
done
if [ "$up" != yes ]; then
    echo "the cluster did not become healthy within 30 s; see var/log/*.log (still running; Ctrl-C stops it)" >&2
fi

if [ "$up" = yes ]; then
    echo
    echo "Herald is running ($ini, $state, logs in var/log/)."
else
    echo
    echo "Herald is NOT healthy yet ($ini, $state, logs in var/log/)."
fi
cat <<'BANNER'

  HTTP API          http://127.0.0.1:5001      2 herald-api processes, one shared socket
  WebSocket edge    ws://127.0.0.1:8888        2 herald-websockets processes, one shared socket
                    (/ws native, / and /socket Mozilla, /push/socket VPush,
                     /connect Thunderpush over SockJS)
  router            tcp://127.0.0.1:9988 (PULL) tcp://127.0.0.1:9989 (PUB), http://127.0.0.1:5004/health
                    (the Redis layout adds a second: 9990, 9991, http://127.0.0.1:5006/health)
  monitor           http://127.0.0.1:5003/     (/status for JSON)
  circusctl         .venv/bin/circusctl --endpoint tcp://127.0.0.1:5555 status

  dev app           id "dev", public key "dev-public"
  dev API key       name "admin", secret "dev-secret-change-me", scopes *:*

Try the walkthrough in README.md. Ctrl-C stops the cluster.
BANNER

wait "$circusd"
