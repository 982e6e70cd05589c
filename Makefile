# The two commands a newcomer needs: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: setup lint typecheck test run serve demo clean

setup: $(PY_STAMP) $(NODE_STAMP) $(CHROMIUM)

$(PY_STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Chromium for the browser test (Playwright drives the system browser; no browser download).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "note: $(CHROMIUM) is missing and cannot be installed here (needs root and apt-get):"; \
		echo "      the browser test will be skipped. Install Debian's 'chromium' package to run it."; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# billing/ and tests/ (pyproject.toml [tool.mypy] packages): the fakes are checked against the ports they fake.
typecheck: setup
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/pytest

# The product end to end on the local stack: catalog, sign-ups, payments, traffic, usage, invoices, report.
demo: setup
	$(PY) -m demo

# The whole local stack for a person to click through; the Functions app on http://127.0.0.1:7071.
run: setup
	$(PY) -m devstack --port 7071

# Only the Functions app on :7071 (func start when Core Tools are installed, else the development host).
serve: setup
	@if command -v func >/dev/null 2>&1; then func start; else $(PY) -m devhost; fi

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis
