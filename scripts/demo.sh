#!/usr/bin/env bash
# One command on a fresh machine: set up, generate a week of sample orders, serve the bundled
# FX rates, materialize every asset on the embedded default, then say how to open the UI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD}"
exec .venv/bin/regional-etl demo "$@"
