# Quick start: `make run` (web app + scheduler on SQLite), `make test` (the whole suite).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make run` and `make manage` need only the app's requirements; the test and lint tools come with
# `make test` (and the other developer targets) on top of them.
RUNTIME_STAMP := $(VENV)/.installed-runtime
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint venv venv-runtime clean mutate

venv-runtime: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): requirements.txt
	@if [ ! -x "$(PY)" ]; then \
	  python=$$(scripts/find-python) || exit 1; \
	  echo "creating $(VENV) with $$python"; \
	  "$$python" -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(RUNTIME_STAMP)

venv: $(STAMP)

$(STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

run: venv-runtime
	@HOST=$(HOST) PORT=$(PORT) PYTHON=$(PY) scripts/run.sh

test: venv venv-dj52
	@PYTHON=$(PY) PYTHON_DJ52=$(PY_DJ52) scripts/test.sh

.PHONY: bench
# Benchmarks (BENCHMARKS.md): installs the benchmark-only packages, runs every scenario and baseline.
# `make bench BENCH_ARGS=--quick` is the smoke run; `$(PY) -m benches.run --help` lists the sizes.
bench: venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r benches/requirements.txt
	$(PY) -m benches.run $(BENCH_ARGS)

.PHONY: bench-phases
# Lateness by phase distribution (aligned, spread over 100 ms, uniform) x task kind (def, async def) at
# 200 and 1,000 tasks, each beside bare APScheduler with the same phases (about 20 minutes on 2 cores).
bench-phases: venv
	$(PY) -m benches.run --scenarios phases $(BENCH_ARGS)

.PHONY: bench-fleet
# The worker fleet (README: Scaling out): runs/s and lateness against 1, 2, 4, 8 db_worker processes with
# tasks that sleep, against in-process, and the hand-off's cost per run; on a throw-away PostgreSQL server
# (about 12 minutes on 2 cores). `make bench-fleet BENCH_ARGS=--quick` is the smoke run.
bench-fleet: venv
	$(PY) -m benches.fleet $(BENCH_ARGS)

# Mutation testing of the core modules (README, Tests): slow, not part of `make test`.
mutate: venv
	@PYTHON=$(PY) scripts/mutate.sh $(MUTATE_ARGS)

# -- the app as a package (README: Use it in your own project) ----------------------------------
# `make test` also runs the SQLite suite on Django 5.2 LTS, in a second environment on the oldest
# Python the app supports (3.11 where there is one): requirements-django52.txt.
VENV_DJ52 ?= .venv-dj52
PY_DJ52 := $(VENV_DJ52)/bin/python
STAMP_DJ52 := $(VENV_DJ52)/.installed

.PHONY: venv-dj52 wheel

venv-dj52: $(STAMP_DJ52)

$(STAMP_DJ52): requirements-django52.txt
	@if [ ! -x "$(PY_DJ52)" ]; then \
	  python=$$(scripts/find-python-oldest) || exit 1; \
	  echo "creating $(VENV_DJ52) with $$python"; \
	  "$$python" -m venv $(VENV_DJ52); \
	fi
	$(PY_DJ52) -m pip install --quiet --disable-pip-version-check -r requirements-django52.txt
	@touch $(STAMP_DJ52)

# dist/django_task_scheduler-<version>-py3-none-any.whl: the app only (pyproject.toml).
wheel: venv
	$(PY) -m build --wheel --no-isolation --outdir dist .

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check scheduler_app scheduler_project tests benches manage.py

clean:
	rm -rf $(VENV) $(VENV_DJ52) dist build *.egg-info var db.sqlite3 db.sqlite3-* .pytest_cache test-artifacts mutants

.PHONY: manage
# Any manage.py command in the `make run` setup (its settings, database and DJANGO_DEBUG=1 default):
# make manage ARGS="trigger_task crawl_site"
manage: venv-runtime
	@DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) manage.py $(ARGS)
