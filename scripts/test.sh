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
"$PYTHON" -m pytest "$@"
