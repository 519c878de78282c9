#!/usr/bin/env bash
# `make test`: install what the suite needs on this machine, then run it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p var
# The admin browser tests drive Debian's Chromium through Playwright (no browser download).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Chromium for the browser tests (apt-get install chromium)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "WARNING: /usr/bin/chromium is missing and cannot be installed here (needs root and apt-get);" >&2
    echo "         the browser tests will fail. Install it with: sudo apt-get install chromium" >&2
  fi
fi

# PostgreSQL (issue 5): the suite also runs against a real server. CI is a fresh Debian machine,
# as root: install the server binaries when missing; tests/pgserver.py starts a throw-away server.
if ! "$PYTHON" -m tests.pgserver check >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing PostgreSQL: apt-get install postgresql"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql \
      >/dev/null; } || echo "apt-get could not install postgresql"
fi

# The fleet's second engine (README: Scaling out): RQ workers over Debian's redis-server, which the
# fleet tests start themselves (tests/test_executors.py).
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing Redis: apt-get install redis-server"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
      >/dev/null; } || echo "apt-get could not install redis-server"
fi

# Each pass ends with its ten slowest tests: the whole of `make test` should stay under ~25 minutes.
set -- --durations=10 "$@"

status=0
echo "== SQLite: the whole suite, but the tests that need PostgreSQL"
"$PYTHON" -m pytest -m "not postgres" "$@" || status=$?

# The PostgreSQL pass and the Django 5.2 pass run side by side: the suite mostly waits on the
# processes it starts (about 0.4 of a core per pass), and one after the other they made `make test`
# ~30 minutes. The Django 5.2 pass writes to a log, printed when the PostgreSQL pass has ended.
dj52_log=var/test-django52.log

# Django 5.2 LTS (README: Use it in your own project): the SQLite suite again, in the second environment
# (`make venv-dj52`: requirements-django52.txt on the oldest Python >= 3.11 found).
PYTHON_DJ52=${PYTHON_DJ52:-.venv-dj52/bin/python}
# The API fuzzing (schemathesis) and the benchmarks' two smoke runs run once, in the first pass: they
# test our API and the benchmark harness, not the Django line.
dj52_default="--ignore=tests/test_api_schemathesis.py"
dj52_default+=" --deselect=tests/test_benches.py::test_quick_benchmark_produces_every_scenarios_figures"
dj52_default+=" --deselect=tests/test_benches.py::test_quick_phase_matrix_runs_ours_and_bare_apscheduler_with_the_phases_asked"
read -r -a dj52_args <<<"${DJ52_PYTEST_ARGS:-$dj52_default}"
dj52_status=0
dj52_pid=
# A stopped `make test` stops the pass beside it too (a background job here ignores Ctrl-C).
trap 'if [ -n "$dj52_pid" ]; then pkill -TERM -P "$dj52_pid" 2>/dev/null; kill "$dj52_pid" 2>/dev/null; fi' EXIT
trap 'exit 130' INT TERM
if [ -x "$PYTHON_DJ52" ]; then
  {
    echo "== Django 5.2 LTS on SQLite: $("$PYTHON_DJ52" -c 'import django, sys; print(f"Django {django.get_version()}, Python {sys.version.split()[0]}")')"
    # The fleet (README: Scaling out) needs django.tasks, which Django 5.2 lacks (there it needs the
    # django-tasks backport, and a system check says so: tests/test_checks.py runs here too): its
    # engine tests (marker `fleet`) run in the SQLite and PostgreSQL passes only.
    echo "   (left out here: the fleet's engine tests, marker 'fleet': django.tasks needs Django >= 6.0)"
    "$PYTHON_DJ52" -m pytest -m "not postgres and not fleet" "${dj52_args[@]}" "$@"
  } >"$dj52_log" 2>&1 &
  dj52_pid=$!
  echo "== Django 5.2 LTS on SQLite: started beside the PostgreSQL pass (its output follows that pass's)"
else
  dj52_status=1
fi

# Then all but the browser and schema-fuzzing tests (they test the UI, not the database) on PostgreSQL,
# and but the tests that use none of the run's databases (marker `own_database`: a project copy on its
# own SQLite file, the benchmarks' smoke runs): here they would run the same test again.
read -r -a pg_args <<<"${PG_PYTEST_ARGS:---ignore=tests/test_api_schemathesis.py}"
echo "== PostgreSQL: the suite but browser tests and those on their own database (${pg_args[*]})"
pg_status=0
"$PYTHON" -m tests.pgserver run -- "$PYTHON" -m pytest -m "not browser and not own_database" "${pg_args[@]}" "$@" \
  || pg_status=$?
if [ "$pg_status" = 3 ]; then
  echo "FAILED: the PostgreSQL tests did NOT run: no PostgreSQL server could be started here (see above)."
elif [ "$pg_status" != 0 ]; then
  echo "FAILED: the PostgreSQL run failed (status $pg_status)."
fi

if [ -n "$dj52_pid" ]; then
  wait "$dj52_pid" || dj52_status=$?
  dj52_pid=
  cat "$dj52_log"
  [ "$dj52_status" = 0 ] || echo "FAILED: the Django 5.2 run failed (status $dj52_status)."
else
  echo "FAILED: the Django 5.2 run did NOT run: no $PYTHON_DJ52 (make venv-dj52 creates it)."
fi

[ "$status" = 0 ] || echo "FAILED: the SQLite run failed (status $status)."
if [ "$status" = 0 ] && [ "$pg_status" = 0 ] && [ "$dj52_status" = 0 ]; then
  echo "== all passed, on SQLite and on PostgreSQL (Django 6), and on SQLite (Django 5.2)"
  exit 0
fi
exit 1
