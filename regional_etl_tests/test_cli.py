"""The command line answers a user error with one line and exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["backfill", "--start", "2024-03-05", "--end", "2024-03-04"], "is before --start"),
        (["generate", "--start", "2024-03-01", "--end", "2024-03-01", "--rows", "-5"], "at least"),
        (["fx-server", "--port", "70000"], "not a TCP port"),
        (["generate", "--start", "2024-13-01", "--end", "2024-03-01"], "YYYY-MM-DD"),
        (["spark-server", "restart"], "invalid choice"),
    ],
)
def test_a_user_error_is_one_line_and_exit_status_2(argv: list[str], says: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "regional_etl.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("regional-etl"), out.stderr
    assert says in lines[0] and "Traceback" not in out.stderr
