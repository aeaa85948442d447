# Serena: two commands on a fresh Debian machine.
#   make demo   set up everything needed, start services, run the platform with the simulator driving it
#   make test   set up everything needed, start services, run the test suite
# Both are idempotent: a second run only checks and skips what is done.

# The first interpreter that actually runs and is >= 3.11 (a pyenv shim may exist for a version that is not active).
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do $$p -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
WEB    := serena/web
PYTEST_WORKERS ?= 2

.PHONY: setup debian demo test services services-down up bench clean-venv

# Debian packages first: the venv needs python3-venv, npm ci needs node.
setup: debian $(STAMP) $(WEB)/node_modules/.installed

debian:
	@bash scripts/setup-debian.sh

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.11 not found (apt-get install python3)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

$(WEB)/node_modules/.installed: $(WEB)/package.json $(wildcard $(WEB)/package-lock.json)
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

services: setup
	$(BIN)/serena services up

services-down:
	$(BIN)/serena services down

# The demo's admin (idempotent; a fixed development TOTP secret so the simulator can sign in) and simulation.
DEMO_ADMIN_EMAIL    ?= admin@serena.local
DEMO_ADMIN_PASSWORD ?= serena-demo-admin
DEMO_TOTP_SECRET    ?= SERENADEMOTOTPSECRETDEVONLY23456
DEMO_SIM_ARGS       ?= --city default --drivers 12 --orders-per-hour 150 --speedup 1 --duration 1h --drain 3600 --commerce-share 0.3 --watch-share 0.5

demo: services
	$(BIN)/serena migrate
	$(BIN)/serena users create-admin --email $(DEMO_ADMIN_EMAIL) --password '$(DEMO_ADMIN_PASSWORD)' --totp-secret $(DEMO_TOTP_SECRET)
	-$(BIN)/serena commerce seed --products 200
	SERENA_SIM_ADMIN_EMAIL=$(DEMO_ADMIN_EMAIL) SERENA_SIM_ADMIN_PASSWORD='$(DEMO_ADMIN_PASSWORD)' \
	SERENA_SIM_ADMIN_TOTP_SECRET=$(DEMO_TOTP_SECRET) SERENA_SIM_ARGS='$(DEMO_SIM_ARGS)' \
	SERENA_TRACKING_GRAPH=$${SERENA_TRACKING_GRAPH-default} $(BIN)/serena up --simulate

# Two passes: the browser tests drive sync Playwright, whose event loop must not share a
# worker process with the asyncio tests' session loop.
test: services
	@status=0; \
	$(BIN)/pytest -n $(PYTEST_WORKERS) -q -m "not browser" || status=$$?; \
	$(BIN)/pytest -n $(PYTEST_WORKERS) -q -m browser || status=$$?; \
	exit $$status

bench: setup
	$(BIN)/pip install -q -e '.[dev,bench]'
	@echo "benchmarks: see docs/benchmarks.md for each command"

clean-venv:
	rm -rf $(VENV)
