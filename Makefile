# amihub: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
# the newest supported Python that runs here (a pyenv shim may exist and still fail:
# .python-version makes pyenv's 3.11, 3.12 and 3.13 all available in this directory)
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c '' 2>/dev/null && { command -v $$p; break; }; done)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench tools clean mutate

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "amihub needs Python 3.11 or newer (3.11, 3.12 and 3.13 are tested); set PYTHON=/path/to/python3")'
	@# a venv of another Python (e.g. made before the default moved to 3.13) is made anew
	@if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print(sys.version_info[:2])')" != \
		"$$($(PYTHON) -c 'import sys; print(sys.version_info[:2])')" ]; then rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Debian tools the tests use as real peers: OpenSSH server and client (SFTP tests),
# Chromium and its WebDriver (the web UI's browser tests; nothing is downloaded at test time).
tools:
	@if ! command -v sshd >/dev/null 2>&1 && ! test -x /usr/sbin/sshd || ! command -v sftp >/dev/null 2>&1; then \
		echo "installing openssh-server and openssh-client"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null; \
	fi
	@if ! test -x /usr/bin/chromium || ! test -x /usr/bin/chromedriver; then \
		echo "installing chromium and chromium-driver"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

demo: $(STAMP)
	$(VENV)/bin/amihub demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) tools
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# the benchmarks' own extra (spyne, the SOAP benchmark's baseline; on Python 3.11 only)
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(VENV)/.bench-installed
	$(PY) -m bench

# Mutation testing of the critical modules (docs/testing.md), not part of `make test`:
# mutmut, one worker, niced; `make mutate AREAS="dst parser"` for some areas.
$(VENV)/.mutate-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,mutate]'
	@touch $@

mutate: $(VENV)/.mutate-installed tools
	nice -n 19 $(PY) mutation/run.py $(AREAS)

clean:
	rm -rf $(VENV) build *.egg-info amihub.db
