#!/usr/bin/env bash
# Set up and run every check CI runs: ruff, pyright, and the whole pytest suite (slow tests too).
# Pass pytest arguments to narrow it, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/pyright
.venv/bin/python -m pytest "$@"
