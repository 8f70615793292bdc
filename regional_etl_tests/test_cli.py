"""The command line as a person reads it: a user error is one line and exit status 2, never a
traceback; long work shows a progress bar and a summary, not Dagster's logs."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from regional_etl.fx.server import FXServer
from regional_etl.generate import generate_landing
from regional_etl_tests.e2e_support import product_env

REPO = Path(__file__).resolve().parents[1]


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


def test_a_backfill_without_a_daemon_shows_progress_and_a_summary_only(
    tmp_path: Path, spark_server_state: Any, pipeline_fx_server: FXServer
) -> None:
    """What a person sees at the terminal: the progress bar and the per-partition summary.
    The runs executed in-process write their event logs and library warnings to a file under
    DAGSTER_HOME, named in the summary."""
    home, landing = tmp_path / "home", tmp_path / "landing"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    generate_landing(landing, dt.date(2024, 3, 4), dt.date(2024, 3, 4), rows=20, seed=2)
    env = product_env(
        home,
        landing,
        tmp_path / "warehouse",
        REGIONAL_ETL_FX_URL=pipeline_fx_server.url,
        PYTHONPATH=str(REPO),
    )
    argv = [
        sys.executable,
        "-m",
        "regional_etl.cli",
        "backfill",
        "--start",
        "2024-03-04",
        "--end",
        "2024-03-04",
    ]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 partitions: 4 succeeded" in out.stdout, out.stdout
    assert "partitions published" in out.stdout  # the progress bar
    noise = ("DEBUG", "Warning", "Traceback", "RUN_START")
    assert not [n for n in noise if n in out.stdout + out.stderr], out.stdout + out.stderr
    [log] = (home / "logs").glob("backfill-*.log")
    assert f"run logs: {log}" in out.stdout
    assert "RUN_SUCCESS" in log.read_text()
