# soakd — the two commands the README promises, and the pieces they are made of.
# Everything installs itself: a virtualenv in .venv, Python packages from PyPI,
# Debian packages (prometheus, alertmanager, chromium, openssl) through apt-get for the tests.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
APT_PACKAGES := prometheus prometheus-alertmanager chromium systemd openssl
STAMP  := $(VENV)/.installed

.PHONY: demo test setup system-deps lint typecheck unit bench clean

## demo: a short soak against the bundled reference target, ending in a report
demo: $(STAMP)
	$(BIN)/soakd demo $(ARGS)

## test: the whole suite (lint, types, every test, including the real Prometheus,
## Alertmanager, Chromium and systemd-analyze checks)
test: $(STAMP) system-deps lint typecheck unit

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e . --group dev
	touch $(STAMP)

setup: $(STAMP)

system-deps:
	@missing=""; \
	for tool in prometheus promtool prometheus-alertmanager amtool chromium systemd-analyze openssl; do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -p no:randomly --durations=15 $(PYTEST_ARGS)

bench: $(STAMP)
	@echo "see docs/performance.md for each script and its arguments"

clean:
	rm -rf $(VENV) demo-state .pytest_cache .mypy_cache .ruff_cache
