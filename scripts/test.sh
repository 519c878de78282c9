#!/usr/bin/env bash
# `make test`: install what the suite needs on this machine, then run it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p var
"$PYTHON" -m pytest "$@"
