# Herald's two front doors: `make run` (build, then the whole cluster under circus on the
# SQLite default) and `make test` (format, lints, every test). Binaries and tests share the
# release profile so nothing is compiled twice.

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
# The original Thunderpush server and browser client the compatibility tests compare with;
# web-push-testing, a real Web Push service, goes into e2e/webpush/node_modules.
REFERENCE := target/reference

.PHONY: run run-redis test build venv reference bench bench-stores clean

run: build venv
	etc/run.sh

# The same on the Redis store, with its own redis-server (etc/circus-redis.ini).
run-redis: build venv
	CIRCUS_INI=etc/circus-redis.ini etc/run.sh

test: venv reference
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) build --release --bins
	$(CARGO) test --release --workspace --no-fail-fast
	# The same binaries on the Redis store (each cluster starts its own redis-server);
	# --workspace keeps the features of the build above, so nothing is compiled again.
	HERALD_E2E_STORE=redis $(CARGO) test --release --workspace --no-fail-fast --test cluster -- \
		messages:: webhooks:: native:: v1_api:: mozilla_api:: recovery:: webpush:: ppg::

build:
	$(CARGO) build --release --bins

venv: $(VENV)/.installed

$(VENV)/.installed: etc/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r etc/requirements.txt
	touch $@

reference: $(REFERENCE)/.installed e2e/webpush/node_modules/.installed

$(REFERENCE)/.installed: e2e/thunderpush/setup.sh e2e/thunderpush/package-lock.json
	PYTHON=$(PYTHON) e2e/thunderpush/setup.sh $(REFERENCE)
	touch $@

# A real Web Push service for the Web Push tests (npm web-push-testing, pinned by the lock).
e2e/webpush/node_modules/.installed: e2e/webpush/package-lock.json
	cd e2e/webpush && npm ci --no-audit --no-fund --loglevel=error
	touch $@

bench: build venv
	bench/run.sh

bench-stores: build venv
	bench/stores.sh

clean:
	$(CARGO) clean
	rm -rf $(VENV) var
