#!/usr/bin/env bash
# Set up a fresh machine: a Python 3.11 virtualenv with the pinned packages, and the Delta jars
# resolved once from Maven Central into .cache/jars (runs and tests never download anything).
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python_bin="$candidate"; break
    fi
  done
fi
[ -n "$python_bin" ] || { echo "setup: Python 3.11 is required" >&2; exit 1; }
command -v java >/dev/null || { echo "setup: Java 17 is required (java not on PATH)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/regional-etl setup-jars
