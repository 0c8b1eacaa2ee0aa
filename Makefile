# Herald's two front doors: `make run` (build, then the whole cluster under circus on the
# SQLite default) and `make test` (format, lints, every test). Binaries and tests share the
# release profile so nothing is compiled twice.

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv

.PHONY: run test build venv bench clean

run: build venv
	etc/run.sh

test: venv
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) build --release --bins
	$(CARGO) test --release --workspace --no-fail-fast

build:
	$(CARGO) build --release --bins

venv: $(VENV)/.installed

$(VENV)/.installed: etc/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r etc/requirements.txt
	touch $@

bench: build venv
	bench/run.sh

clean:
	$(CARGO) clean
	rm -rf $(VENV) var
