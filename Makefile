# Quick start: `make run` (web app + scheduler on SQLite), `make test` (the whole suite).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint venv clean mutate

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@if [ ! -x "$(PY)" ]; then \
	  python=$$(scripts/find-python) || exit 1; \
	  echo "creating $(VENV) with $$python"; \
	  "$$python" -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

run: venv
	@HOST=$(HOST) PORT=$(PORT) PYTHON=$(PY) scripts/run.sh

test: venv
	@PYTHON=$(PY) scripts/test.sh

.PHONY: bench
# Benchmarks (BENCHMARKS.md): installs the benchmark-only packages, runs every scenario and baseline.
# `make bench BENCH_ARGS=--quick` is the smoke run; `$(PY) -m benches.run --help` lists the sizes.
bench: venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r benches/requirements.txt
	$(PY) -m benches.run $(BENCH_ARGS)

# Mutation testing of the core modules (README, Tests): slow, not part of `make test`.
mutate: venv
	@PYTHON=$(PY) scripts/mutate.sh $(MUTATE_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check scheduler_app scheduler_project tests benches manage.py

clean:
	rm -rf $(VENV) var db.sqlite3 db.sqlite3-* .pytest_cache test-artifacts mutants

.PHONY: manage
# Any manage.py command in the `make run` setup (its settings, database and DJANGO_DEBUG=1 default):
# make manage ARGS="trigger_task crawl_site"
manage: venv
	@DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) manage.py $(ARGS)
