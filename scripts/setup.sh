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

# The browser tests drive Debian's Chromium; Playwright's own browser download stays off.
if [ ! -x /usr/bin/chromium ]; then
  chromium_log=.cache/setup-chromium.log
  mkdir -p .cache
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >"$chromium_log" 2>&1; then
    tail -n 20 "$chromium_log" >&2
    echo "setup: installing Debian's chromium failed; the whole log is in $chromium_log" >&2
    exit 1
  fi
  echo "setup: installed $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev,postgres,bench]"
# The project's own modules byte-compiled once: every run, code server and test worker imports
# them, and where PYTHONDONTWRITEBYTECODE is set (CI machines) each would compile them again.
# Python still checks each file's time stamp, so an edit is never run from a stale copy.
.venv/bin/python -m compileall -q regional_etl benchmarks regional_etl_tests >/dev/null
# The PostgreSQL instance test starts a real server from the machine's binaries: install Debian's
# package only when no server is there (the test says what is missing if this could not run).
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing the PostgreSQL server (Debian package postgresql)"
    DEBIAN_FRONTEND=noninteractive apt-get -qq update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends postgresql >/dev/null
  else
    echo "setup: no PostgreSQL server binaries (initdb); install the postgresql package to run" \
      "regional_etl_tests/test_postgres_instance.py" >&2
  fi
fi
# Spark's Ivy prints a line per jar: keep that in a file, show the summary (or the error).
mkdir -p .cache
jars_log=.cache/setup-jars.log
if ! .venv/bin/regional-etl setup-jars >"$jars_log" 2>&1; then
  tail -n 40 "$jars_log" >&2
  echo "setup: resolving the Delta jars failed; the whole log is in $jars_log" >&2
  exit 1
fi
tail -n 1 "$jars_log"
