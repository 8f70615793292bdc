"""The production Dagster instance: runs, event log and schedules in a real PostgreSQL server
(deploy/dagster-postgres.yaml), the pipeline driven by `dagster-daemon` alone, no webserver.

With the rates of the date in place, the landing sensor must launch one regional run per drop,
several at a time, and the automation sensor must then bring the date to gold; the tables must
equal what the oracle makes of the landing lines, and Dagster's records must be in PostgreSQL,
not in SQLite files.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunRecord, materialize

from regional_etl.assets.reference import fx_rates
from regional_etl.contract import REGIONS
from regional_etl.generate import generate_landing
from regional_etl_tests.conftest import Pipeline
from regional_etl_tests.e2e_support import Daemon, E2EError, dagster_daemon, product_env
from regional_etl_tests.oracle import assert_warehouse_matches
from regional_etl_tests.postgres_server import PostgresServer, postgres_server

REPO = Path(__file__).resolve().parents[1]
POSTGRES_YAML = REPO / "deploy" / "dagster-postgres.yaml"
DATE = "2024-03-04"  # a Monday inside the bundled ECB history
ROWS = 40

# Bounded waits, generous for a loaded 2-core machine (nothing asserts on wall time).
PIPELINE_TIMEOUT = 20 * 60.0
# After a run of the date failed: time for a daemon run retry to show up before giving up.
FAILURE_GRACE = 120.0
POLL = 2.0
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def test_postgres_yaml_changes_only_the_storage() -> None:
    """The production variant is the embedded dagster.yaml with PostgreSQL storage from the
    environment, nothing else: run retries, concurrency and the rest cannot drift apart."""
    embedded = yaml.safe_load((REPO / "dagster.yaml").read_text())
    production = yaml.safe_load(POSTGRES_YAML.read_text())
    assert production.pop("storage") == {
        "postgres": {
            "postgres_db": {
                "hostname": {"env": "DAGSTER_PG_HOST"},
                "port": {"env": "DAGSTER_PG_PORT"},
                "username": {"env": "DAGSTER_PG_USER"},
                "password": {"env": "DAGSTER_PG_PASSWORD"},
                "db_name": {"env": "DAGSTER_PG_DB"},
                "scheme": "postgresql+psycopg2",
            }
        }
    }
    # The embedded instance keeps Dagster's default storage: SQLite under $DAGSTER_HOME.
    assert "storage" not in embedded
    assert production == embedded
    assert production["concurrency"]["runs"]["max_concurrent_runs"] >= 2


# --- the slow test --------------------------------------------------------------------------


def runs_of_date(instance: DagsterInstance) -> list[RunRecord]:
    """Runs whose partition is DATE or one of its (DATE, region) keys, oldest first."""
    keep = []
    for record in instance.get_run_records():
        tags = record.dagster_run.tags
        key = tags.get("dagster/partition", "")
        lo = tags.get("dagster/asset_partition_range_start", "")
        if key.split("|")[0] == DATE or lo.split("|")[0] == DATE:
            keep.append(record)
    return sorted(keep, key=lambda r: r.create_timestamp)


def describe(record: RunRecord) -> str:
    run = record.dagster_run
    return f"{run.job_name}[{run.tags.get('dagster/partition')}]={run.status.value}"


def wait_for_gold(instance: DagsterInstance, daemon: Daemon) -> None:
    """Poll until daily_revenue|DATE is materialized and its run has ended (the materialization
    is recorded a moment before the run's end); fail early (after a grace for a daemon run
    retry) when a run of the date failed, since nothing would then bring the date to gold."""
    deadline = time.monotonic() + PIPELINE_TIMEOUT
    failed_since: float | None = None
    last = ""
    while True:
        daemon.check_alive()
        runs = runs_of_date(instance)
        active = [r for r in runs if r.dagster_run.status not in TERMINAL]
        if DATE in instance.get_materialized_partitions(AssetKey("daily_revenue")) and not active:
            return
        state = ", ".join(describe(r) for r in runs)
        if state != last:
            print(f"{dt.datetime.now():%H:%M:%S} runs of {DATE}: {state or 'none yet'}")
            last = state
        failed = [r for r in runs if r.dagster_run.status == DagsterRunStatus.FAILURE]
        if failed and not active:
            failed_since = failed_since or time.monotonic()
            if time.monotonic() - failed_since > FAILURE_GRACE:
                raise E2EError(f"runs of {DATE} failed and none is left to bring it to gold")
        else:
            failed_since = None
        if time.monotonic() > deadline:
            raise E2EError(f"daily_revenue|{DATE} not materialized within {PIPELINE_TIMEOUT:.0f}s")
        time.sleep(POLL)


def most_at_once(runs: list[RunRecord]) -> int:
    """The largest number of these runs that were executing at the same moment."""
    edges = []
    for record in runs:
        assert record.start_time is not None and record.end_time is not None, describe(record)
        edges += [(record.start_time, 1), (record.end_time, -1)]
    # An end sorts before a start at the same instant: touching runs did not overlap.
    running = peak = 0
    for _, step in sorted(edges):
        running += step
        peak = max(peak, running)
    return peak


def assert_runs(instance: DagsterInstance) -> list[RunRecord]:
    """The landing sensor launched one run per drop, several at a time, and the automation
    sensor the gold run; all succeeded. Returns the daemon's runs of the date."""
    runs = [r for r in runs_of_date(instance) if "dagster/sensor_name" in r.dagster_run.tags]
    by_sensor: dict[str, list[RunRecord]] = {}
    for record in runs:
        assert record.dagster_run.status == DagsterRunStatus.SUCCESS, describe(record)
        by_sensor.setdefault(record.dagster_run.tags["dagster/sensor_name"], []).append(record)
    regional, gold = by_sensor.pop("landing_sensor", []), by_sensor.pop("regional_automation", [])
    assert not by_sensor, [describe(r) for r in runs]
    assert {r.dagster_run.job_name for r in regional} == {"regional_orders_job"}
    partitions = sorted(r.dagster_run.tags["dagster/partition"] for r in regional)
    assert partitions == sorted(f"{DATE}|{region}" for region in REGIONS)
    assert [r.dagster_run.tags["dagster/partition"] for r in gold] == [DATE]
    # The run queue let several runs of the one Spark server execute together.
    assert most_at_once(regional) >= 2, [(describe(r), r.start_time, r.end_time) for r in regional]
    return runs


def assert_records_in_postgres(
    pg: PostgresServer, instance: DagsterInstance, done: list[RunRecord]
) -> None:
    """Read Dagster's own tables with psycopg2: the runs, their events and the sensor ticks."""
    in_db = dict(pg.query("SELECT run_id, status FROM runs"))
    assert set(in_db) == {r.dagster_run.run_id for r in instance.get_run_records()}
    assert {in_db[r.dagster_run.run_id] for r in done} == {"SUCCESS"}
    materialized = dict(
        pg.query(
            "SELECT asset_key, count(*) FROM event_logs"
            " WHERE dagster_event_type = 'ASSET_MATERIALIZATION' GROUP BY asset_key"
        )
    )
    regional = {'["raw_orders"]', '["orders"]', '["orders_quarantine"]'}
    assert {key: materialized.get(key, 0) >= len(REGIONS) for key in regional} == dict.fromkeys(
        regional, True
    ), materialized
    assert materialized.get('["daily_revenue"]', 0) >= 1, materialized
    # Schedule storage: the sensor tick that requested each run, with its run id.
    ticks = [
        body for (body,) in pg.query("SELECT tick_body FROM job_ticks WHERE status = 'SUCCESS'")
    ]
    for record in done:
        run_id, sensor = record.dagster_run.run_id, record.dagster_run.tags["dagster/sensor_name"]
        assert any(run_id in body and sensor in body for body in ticks), (sensor, run_id)


@pytest.mark.slow
def test_daemon_on_postgres_brings_landing_drops_to_gold(
    pipeline: Pipeline,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spark: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    home = tmp_path / "home"  # DAGSTER_HOME and the daemon's working directory
    home.mkdir()
    shutil.copy(POSTGRES_YAML, home / "dagster.yaml")
    day = dt.date.fromisoformat(DATE)
    generate_landing(pipeline.landing, day, day, rows=ROWS, seed=29, anomalies=True)
    with postgres_server(tmp_path / "postgres.log") as pg:
        env = product_env(home, pipeline.landing, pipeline.warehouse, **pg.dagster_env())
        # The test reads and writes the same instance as the daemon, through the same yaml.
        for name, value in pg.dagster_env().items():
            monkeypatch.setenv(name, value)
        log = tmp_path / "dagster-daemon.log"
        with DagsterInstance.from_config(str(home)) as instance:
            # The rates of the date exist before its drops, as fx_rates_daily (00:15) makes them
            # before regional_orders_daily (01:00): the sensor's first tick launches every drop.
            fx = materialize(
                [fx_rates], partition_key=DATE, resources=pipeline.resources, instance=instance
            )
            assert fx.success
            with dagster_daemon(REPO / "workspace.yaml", home, env, log) as daemon:
                try:
                    wait_for_gold(instance, daemon)
                    print(f"daily_revenue|{DATE} after {time.monotonic() - started:.0f}s")
                    done = assert_runs(instance)
                except BaseException:
                    print("\n".join(describe(r) for r in runs_of_date(instance)))
                    print(f"--- dagster-daemon log tail ({log}) ---\n{daemon.log_tail(200)}")
                    print(f"--- postgres log tail ---\n{pg.log_tail()}")
                    raise
            # The daemon is stopped: what it recorded is in PostgreSQL.
            assert_records_in_postgres(pg, instance, done)
    # ... and not in SQLite files beside dagster.yaml.
    assert not (home / "data" / "dagster" / "storage").exists()
    assert not list(home.rglob("*.db")), list(home.rglob("*.db"))
    expected = assert_warehouse_matches(
        spark, pipeline.warehouse, pipeline.landing, [DATE], REGIONS
    )
    assert any(want.quarantine for want in expected.values()), "anomalies reach the oracle"
    with capsys.disabled():  # the one figure worth seeing in every CI log
        print(
            f"\ndagster-daemon on PostgreSQL, landing drops to gold, end to end in "
            f"{time.monotonic() - started:.0f}s"
        )
