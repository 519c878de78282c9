#!/usr/bin/env bash
# `make mutate`: mutation testing (mutmut) of the core modules with the fast tests, then the kill ratio per
# module. Not part of `make test` (it takes long); run it before a release. Configuration: [tool.mutmut] in
# pyproject.toml. Extra arguments go to `mutmut run` (e.g. a mutant name to re-check one).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
# Each forked test session makes its own SQLite file here (tests/conftest.py), never in the tree.
TEST_DB_DIR=$(mktemp -d)
export TEST_DB_DIR
trap 'rm -rf "$TEST_DB_DIR"' EXIT
# mutmut keeps mutants/ between runs but does not notice a changed [tool.mutmut]: start afresh unless asked.
[ "${MUTATE_KEEP:-}" = 1 ] || rm -rf mutants
status=0
nice -n 10 "$PYTHON" -m mutmut run --max-children "${MUTATE_JOBS:-2}" "$@" >var/mutmut-run.log 2>&1 || status=$?
if [ "$status" != 0 ]; then
  tail -n 40 var/mutmut-run.log
  echo "mutmut run failed (status $status); its output is in var/mutmut-run.log" >&2
  exit "$status"
fi
"$PYTHON" scripts/mutation_report.py
