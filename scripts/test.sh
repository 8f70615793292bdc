#!/usr/bin/env bash
# Set up and run every check CI runs: ruff, pyright, and the whole pytest suite (slow tests too).
# Pass pytest arguments to narrow it, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/pyright
# Two files at a time (a file's tests stay together, so each module fixture starts once): the
# shared Spark server is the limit, and the gain is the time tests spend waiting on daemon ticks.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
