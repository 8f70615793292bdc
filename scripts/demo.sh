#!/usr/bin/env bash
# One command on a fresh machine: set up, generate a week of sample orders, materialize every
# asset on the embedded default (local Spark, local Delta, SQLite instance, the bundled FX
# history), then say how to open the UI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD}"
exec .venv/bin/regional-etl demo "$@"
