# One command each, on a fresh machine with Python 3.11+: make demo, make test, make dev.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export CTI_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CTI_DATA_DIR)/dagster_home
DEMO_PORT ?= 8765

.PHONY: install lock test lint demo dev pools bench screenshot clean eval reliability

# Every dependency comes pinned (with hashes) from requirements.lock; the project itself is
# installed on top without resolving anything again.
$(STAMP): pyproject.toml requirements.lock
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

# Regenerate the lock after a change of dependencies in pyproject.toml (all extras but bench,
# every platform, Python 3.11 and newer). uv is used only here, pinned.
UV_VERSION ?= 0.13.9
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes --no-strip-extras --no-header -o requirements.lock

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

lint: $(STAMP)
	$(BIN)/ruff check .

eval: $(STAMP) ; $(BIN)/python -m tests.eval.harness  # labelled cases: confusion matrix

# `dg check defs` loads the code location the way dg and the webserver do (dagster-dg-cli,
# pinned in the dev extra and the lock).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	@test -x $(BIN)/dg || { echo "dg not installed: dagster-dg-cli is missing from requirements.lock (run make lock)"; exit 1; }
	$(BIN)/dg check defs
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/cti-assets demo --sandbox-port $(DEMO_PORT)

dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/cti-assets dev --sandbox-port $(DEMO_PORT)

pools: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/cti-assets pools

# The whole reliability suite, long scenarios included (CTI_RELIABILITY=1: every provider
# through every fault in whole runs, kill -9 of runs from a terminal and under `dagster dev`,
# concurrent runs of a day, canary key, 1,000 fuzzed imports, big files; about 30 minutes on
# 2 cores), then the figures tables of docs/reliability.md rewritten from this run.
RELIABILITY_FIGURES := $(CTI_DATA_DIR)/reliability-figures
RELIABILITY_TESTS := tests/reliability tests/providers/test_reliability_figures.py \
	tests/providers/test_fail_fast.py tests/providers/test_crash_safety.py \
	tests/providers/test_shared_in_flight.py tests/providers/test_answer_size.py \
	tests/providers/test_tlp_never_sent.py tests/providers/test_secrets_and_hostile_values.py \
	tests/test_instance_init.py tests/test_import_edge_cases.py tests/defs/test_calendar.py \
	tests/defs/test_sensor.py
reliability: $(STAMP)
	@rm -rf $(RELIABILITY_FIGURES) && mkdir -p $(RELIABILITY_FIGURES)
	CTI_RELIABILITY=1 CTI_RELIABILITY_FIGURES=$(RELIABILITY_FIGURES)/runner.md \
		CTI_RELIABILITY_FAULT_FIGURES=$(RELIABILITY_FIGURES)/faults.md \
		CTI_RELIABILITY_RUN_FIGURES=$(RELIABILITY_FIGURES)/runs.jsonl \
		$(BIN)/python -m pytest -q -p no:cacheprovider $(RELIABILITY_TESTS)
	$(BIN)/python -m tests.reliability.figures $(RELIABILITY_FIGURES) docs/reliability.md

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/run.py

# docs/screenshots/*.png for the README: the demo in a temporary data dir, dagster-webserver
# over it, Debian's chromium (apt-get install chromium) driven by playwright.
screenshot: $(STAMP)
	$(BIN)/python scripts/screenshot.py

clean:
	rm -rf $(CTI_DATA_DIR)
