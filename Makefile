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

## unit: every test, in three phases, one command. Most tests wait on real clocks and child
## processes, not on the CPU, so phase 1 runs all those NOT marked `timing` side by side in
## $(WORKERS) pytest-xdist workers (a module stays on one worker: its module fixtures run once).
## Phase 2 runs the `timing` tests -- their verdict rests on measured latency, P99, rates, lag
## or CPU -- one at a time, with nothing else of the suite running. Phase 3 runs the two
## `side_by_side` timing modules (matrices of low-rate soaks, the box ~90 % idle under each)
## beside each other. Every phase always runs; the target fails if any fails, and pytest's
## exit 5 (no test collected) counts as a failure. How a test opts in: docs/testing.md.
WORKERS ?= 4
unit: $(STAMP)
	@rc1=0; rc2=0; rc3=0; \
	echo "== unit, phase 1 of 3: tests that only wait, $(WORKERS) side by side"; \
	$(BIN)/pytest -p no:randomly --durations=15 -n $(WORKERS) --dist loadscope \
	  -m "not timing" $(PYTEST_ARGS) || rc1=$$?; \
	echo "== unit, phase 2 of 3: timing-sensitive tests (marker 'timing'), one at a time"; \
	$(BIN)/pytest -p no:randomly --durations=15 -m "timing and not side_by_side" \
	  $(PYTEST_ARGS) || rc2=$$?; \
	echo "== unit, phase 3 of 3: the soak matrices (marker 'side_by_side'), two side by side"; \
	$(BIN)/pytest -p no:randomly --durations=15 -n 2 --dist loadscope \
	  -m "timing and side_by_side" $(PYTEST_ARGS) || rc3=$$?; \
	echo "== unit: phase 1 exit $$rc1, phase 2 exit $$rc2, phase 3 exit $$rc3 (5 = no tests: a failure)"; \
	[ $$rc1 -eq 0 ] && [ $$rc2 -eq 0 ] && [ $$rc3 -eq 0 ]

bench: $(STAMP)
	@echo "see docs/performance.md for each script and its arguments"

clean:
	rm -rf $(VENV) demo-state .pytest_cache .mypy_cache .ruff_cache
