"""The command line as a person reads it: a user error is one line and exit status 2, never a
traceback; long work shows a progress bar and a summary, not Dagster's logs."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from regional_etl.backfill import BACKFILL_ID_TAG, BackfillReport, PartitionOutcome, Status
from regional_etl.cli import EXIT_FAILED, EXIT_OK, EXIT_PENDING, backfill_exit_status, build_parser
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
    # The next day, only eu-west has landed: pending, not failed; gold of that day waits.
    generate_landing(
        landing, dt.date(2024, 3, 5), dt.date(2024, 3, 5), rows=20, seed=2, regions=["eu-west"]
    )
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
        "2024-03-05",
    ]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == EXIT_PENDING, out.stdout + out.stderr
    assert "8 partitions: 5 succeeded, 3 not_ready" in out.stdout, out.stdout
    held = [line for line in out.stdout.splitlines() if line.startswith("held back:")]
    assert len(held) == 1 and held[0].startswith("held back: 2024-03-05 waits for us-east ("), held
    assert "failed runs" not in out.stdout
    assert "partitions published" in out.stdout  # the progress bar
    noise = ("DEBUG", "Warning", "Traceback", "RUN_START")
    assert not [n for n in noise if n in out.stdout + out.stderr], out.stdout + out.stderr
    [log] = (home / "logs").glob("backfill-*.log")
    assert f"run logs: {log}" in out.stdout
    assert "RUN_SUCCESS" in log.read_text()
    # Every run is tagged with the backfill, so the UI groups them; only a daemon records the
    # backfill itself (its row on the Backfills page).
    backfill_id = out.stdout.split("backfill ", 1)[1].split()[0]
    assert log.name == f"backfill-{backfill_id}.log"
    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert runs and {r.tags.get(BACKFILL_ID_TAG) for r in runs} == {backfill_id}
        assert instance.get_backfill(backfill_id) is None


def test_backfill_exit_statuses_tell_pending_from_failed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def report(*statuses: Status, held: bool = False, failed_runs: int = 0) -> BackfillReport:
        outcomes = {f"p{i}": PartitionOutcome(f"p{i}", s) for i, s in enumerate(statuses)}
        return BackfillReport(
            "b",
            outcomes=outcomes,
            held_back={"2024-03-05": "waits for us-east (...)"} if held else {},
            failed_runs=["r"] * failed_runs,
        )

    ok, failed, waiting = Status.SUCCEEDED, Status.FAILED, Status.NOT_READY
    assert backfill_exit_status(report(ok, ok)) == EXIT_OK == 0
    assert backfill_exit_status(report(ok, waiting, held=True)) == EXIT_PENDING == 3
    assert backfill_exit_status(report(ok, held=True)) == EXIT_PENDING  # a region not targeted
    assert backfill_exit_status(report(ok, failed, waiting, held=True)) == EXIT_FAILED == 1
    assert backfill_exit_status(report(ok, failed_runs=1)) == EXIT_FAILED
    # The help says what each status means.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["backfill", "--help"])
    backfill_help = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 everything targeted was published; 1 a partition" in backfill_help
    assert "3 nothing failed, but a drop is not ready yet" in backfill_help
    # And what the UI shows of a backfill without a daemon.
    assert "the Backfills page does not list it" in backfill_help
    assert "dagster/backfill=<id>" in backfill_help
