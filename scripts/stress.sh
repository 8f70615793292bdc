#!/usr/bin/env bash
# Eight concurrent runs of the same partitions (each region twice) on landing content that
# changes every round, judged against the test oracle after each round (benchmarks/stress.py).
# Arguments go to the module: --rounds N (10), --rows N (200 lines a drop), --keep, --code DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec .venv/bin/python -m benchmarks.stress "$@"
