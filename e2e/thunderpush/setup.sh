#!/usr/bin/env bash
# Fetches what the Thunderpush compatibility tests compare Herald with, into DEST
# (default target/reference): the original server, thunderpush 1.0.1 from PyPI, in
# DEST/venv; its browser client thunderpush.js, taken from the same release's sdist, as
# DEST/thunderpush.js; and sockjs-client from npm in e2e/thunderpush/node_modules.
# Third-party code is fetched here, never kept in the repository. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-target/reference}"
python="${PYTHON:-python3}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

if [ ! -x "$dest/venv/bin/thunderpush" ]; then
    echo "setup: the original Thunderpush server (pip thunderpush==1.0.1) in $dest/venv"
    rm -rf "$dest/venv"
    "$python" -m venv "$dest/venv"
    "$dest/venv/bin/pip" install --quiet --disable-pip-version-check thunderpush==1.0.1
fi

if [ ! -s "$dest/thunderpush.js" ]; then
    echo "setup: thunderpush.js from the thunderpush 1.0.1 sdist"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "$dest/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        --no-binary :all: --dest "$work" thunderpush==1.0.1
    tar -xzf "$work"/thunderpush-1.0.1.tar.gz -C "$work" thunderpush-1.0.1/client/thunderpush.js
    cp "$work/thunderpush-1.0.1/client/thunderpush.js" "$dest/thunderpush.js"
fi

if [ ! -d "$here/node_modules/sockjs-client" ]; then
    command -v npm >/dev/null || { echo "setup: npm is needed (apt-get install nodejs npm)" >&2; exit 1; }
    echo "setup: sockjs-client from npm"
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
