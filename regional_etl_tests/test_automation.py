"""Automation on real folders and a real instance: the landing sensor, the daily schedule,
declarative propagation to daily_revenue, idempotent backfills and concurrent writers."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    ExecuteInProcessResult,
    RunRequest,
    SensorResult,
    build_schedule_context,
    build_sensor_context,
    evaluate_automation_conditions,
    materialize,
)

from regional_etl.assets.bronze import raw_orders
from regional_etl.assets.reference import fx_rates
from regional_etl.assets.silver import orders
from regional_etl.automation.sensors import landing_sensor
from regional_etl.backfill import run_backfill
from regional_etl.contract import REGIONS
from regional_etl.definitions import defs
from regional_etl.generate import generate_landing, write_drop
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl_tests.conftest import Pipeline
from regional_etl_tests.procs import process_groups

LINE = (
    '{"order_id": "A1", "user_id": "u", "amount": 5, "currency": "EUR", '
    '"order_ts": "2024-03-08T10:00:00Z"}'
)


def tick(instance: DagsterInstance, landing: Path, cursor: str | None) -> SensorResult:
    # Exited here: a context left open enters an instance of its own when first asked for it
    # and, collected in a later test, restores that test's Dagster context to a deleted one.
    with build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"warehouse": WarehouseResource(landing_root=str(landing))},
    ) as context:
        result = landing_sensor(context)
    if not isinstance(result, SensorResult):
        return SensorResult(run_requests=[], cursor=cursor)
    return result


def requested(result: SensorResult) -> list[tuple[str | None, str | None]]:
    return sorted((r.job_name, r.partition_key) for r in result.run_requests or [])


def ingest(
    pipeline: Pipeline, instance: DagsterInstance, partition: str, raise_on_error: bool = True
) -> ExecuteInProcessResult:
    """bronze and silver of one (date, region), as a regional run makes them."""
    return materialize(
        [raw_orders, orders],
        partition_key=partition,
        resources=pipeline.resources,
        instance=instance,
        raise_on_error=raise_on_error,
    )


def test_landing_sensor_new_redelivered_out_of_order_and_incomplete_drops(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    landing = tmp_path / "landing"
    assert tick(instance, landing, None).run_requests == []

    write_drop(landing, "2024-03-08", "eu-west", [LINE])
    write_drop(landing, "2024-03-08", "us-east", [LINE], success=False)  # not complete yet
    # A date without FX rates gets its FX run first; its drops wait for the rates.
    waiting = tick(instance, landing, None)
    assert requested(waiting) == [("fx_rates_job", "2024-03-08")]
    for date in ("2024-03-08", "2024-02-10"):
        instance.report_runless_asset_event(AssetMaterialization("fx_rates", partition=date))
    first = tick(instance, landing, waiting.cursor)
    assert requested(first) == [("regional_orders_job", "2024-03-08|eu-west")]

    # A restarted sensor resumes from its cursor: nothing new, nothing twice.
    again = tick(instance, landing, first.cursor)
    assert requested(again) == []

    # Out of order: a drop for a date weeks earlier arrives after a later one.
    write_drop(landing, "2024-02-10", "ap-south", [LINE.replace("EUR", "INR")])
    late = tick(instance, landing, first.cursor)
    assert ("regional_orders_job", "2024-02-10|ap-south") in requested(late)

    # The incomplete drop completes; the first drop is redelivered (a file added, marker
    # touched again): both are requested, the redelivery under a new run key.
    time.sleep(0.01)
    write_drop(landing, "2024-03-08", "us-east", [LINE.replace("EUR", "USD")])
    write_drop(landing, "2024-03-08", "eu-west", [LINE], file_name="part-00001.jsonl")
    redelivered = tick(instance, landing, late.cursor)
    got = {r.partition_key: r.run_key for r in redelivered.run_requests or []}
    assert set(got) == {"2024-03-08|us-east", "2024-03-08|eu-west"}
    first_keys = {r.partition_key: r.run_key for r in first.run_requests or []}
    assert got["2024-03-08|eu-west"] != first_keys["2024-03-08|eu-west"]
    assert all(isinstance(r, RunRequest) and r.run_key for r in redelivered.run_requests or [])


def test_landing_sensor_reports_folders_that_break_the_layout(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    bad = tmp_path / "region=../x" / "date=2024-03-08"
    bad.mkdir(parents=True)
    (bad / "_SUCCESS").touch()
    (tmp_path / "region=mars" / "date=2024-03-08").mkdir(parents=True)
    (tmp_path / "region=mars" / "date=2024-03-08" / "_SUCCESS").touch()
    assert tick(instance, tmp_path, None).run_requests == []


def test_daily_schedule_launches_yesterdays_ready_drops_and_leaves_the_rest_pending(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    """A region whose drop has not landed by 01:00 is not launched (its run would fail on the
    missing _SUCCESS and page someone): the landing sensor takes it when it lands."""
    regional_orders_schedule = defs.resolve_schedule_def("regional_orders_daily")
    fx_rates_schedule = defs.resolve_schedule_def("fx_rates_daily")
    assert regional_orders_schedule.execution_timezone == "UTC"
    landing = tmp_path / "landing"

    def tick() -> Any:
        with build_schedule_context(
            instance=instance,
            scheduled_execution_time=dt.datetime(2024, 3, 9, 1, 0, tzinfo=dt.UTC),
            resources={"warehouse": WarehouseResource(landing_root=str(landing))},
            repository_def=defs.get_repository_def(),
        ) as context:
            return regional_orders_schedule.evaluate_tick(context)

    def launched() -> list[str]:
        return sorted(r.partition_key or "" for r in tick().run_requests or [])

    nothing = tick()
    assert not nothing.run_requests
    waiting = "left to the landing sensor: us-east, us-west, eu-west, ap-south"
    assert waiting in (nothing.skip_message or "")
    for region in REGIONS:
        write_drop(landing, "2024-03-08", region, [LINE], success=region != "ap-south")
    ready = sorted(f"2024-03-08|{r}" for r in REGIONS if r != "ap-south")
    assert launched() == ready
    # A drop the landing sensor already ingested after its marker is not run again.
    instance.report_runless_asset_event(
        AssetMaterialization("raw_orders", partition="2024-03-08|eu-west")
    )
    assert launched() == [k for k in ready if k != "2024-03-08|eu-west"]
    with build_schedule_context(
        scheduled_execution_time=dt.datetime(2024, 3, 9, 0, 15, tzinfo=dt.UTC)
    ) as context:
        fx = fx_rates_schedule.evaluate_tick(context)
    assert [r.partition_key for r in fx.run_requests or []] == ["2024-03-08"]


def test_reprocessing_one_region_updates_daily_revenue_of_that_date_only(
    pipeline: Pipeline, instance: DagsterInstance
) -> None:
    generate_landing(pipeline.landing, dt.date(2024, 3, 8), dt.date(2024, 3, 9), rows=30, seed=5)
    report = run_backfill(
        pipeline.defs, instance, "2024-03-08", "2024-03-09", progress=lambda _: None
    )
    assert report.ok, report.outcomes
    settled = evaluate_automation_conditions(defs=pipeline.defs, instance=instance)
    assert settled.get_requested_partitions(AssetKey("daily_revenue")) == set()

    assert ingest(pipeline, instance, "2024-03-08|eu-west").success
    after = evaluate_automation_conditions(
        defs=pipeline.defs, instance=instance, cursor=settled.cursor
    )
    assert after.get_requested_partitions(AssetKey("daily_revenue")) == {"2024-03-08"}


def test_a_region_updated_between_the_request_of_its_date_and_the_next_tick_is_not_lost(
    pipeline: Pipeline, instance: DagsterInstance
) -> None:
    """The daemon's order of events: the date is requested, its gold run ends, and a region is
    re-materialized before the next evaluation. Gold must be requested again: `eager()` alone
    took that update as handled and left gold stale."""
    generate_landing(pipeline.landing, dt.date(2024, 3, 8), dt.date(2024, 3, 8), rows=30, seed=5)
    before = evaluate_automation_conditions(defs=pipeline.defs, instance=instance)
    assert materialize(
        [fx_rates], partition_key="2024-03-08", resources=pipeline.resources, instance=instance
    ).success
    for region in REGIONS:
        assert ingest(pipeline, instance, f"2024-03-08|{region}").success
    first = evaluate_automation_conditions(
        defs=pipeline.defs, instance=instance, cursor=before.cursor
    )
    assert first.get_requested_partitions(AssetKey("daily_revenue")) == {"2024-03-08"}
    gold = pipeline.defs.resolve_job_def("daily_revenue_job")
    assert gold.execute_in_process(instance=instance, partition_key="2024-03-08").success
    assert ingest(pipeline, instance, "2024-03-08|eu-west").success
    second = evaluate_automation_conditions(
        defs=pipeline.defs, instance=instance, cursor=first.cursor
    )
    assert second.get_requested_partitions(AssetKey("daily_revenue")) == {"2024-03-08"}
    # Handled: the request of the second evaluation resets it; nothing changed since.
    third = evaluate_automation_conditions(
        defs=pipeline.defs, instance=instance, cursor=second.cursor
    )
    assert third.get_requested_partitions(AssetKey("daily_revenue")) == set()


def test_a_failed_gate_keeps_the_date_out_of_automation(
    pipeline: Pipeline, instance: DagsterInstance
) -> None:
    generate_landing(pipeline.landing, dt.date(2024, 3, 8), dt.date(2024, 3, 8), rows=30, seed=5)
    assert run_backfill(
        pipeline.defs, instance, "2024-03-08", "2024-03-08", progress=lambda _: None
    ).ok
    settled = evaluate_automation_conditions(defs=pipeline.defs, instance=instance)
    # A redelivery with too few lines fails the volume gate of us-west.
    for f in (pipeline.landing / "region=us-west" / "date=2024-03-08").glob("*.jsonl"):
        f.unlink()
    write_drop(pipeline.landing, "2024-03-08", "us-west", [LINE.replace("EUR", "USD")])
    bad = ingest(pipeline, instance, "2024-03-08|us-west", raise_on_error=False)
    assert not bad.success
    after = evaluate_automation_conditions(
        defs=pipeline.defs, instance=instance, cursor=settled.cursor
    )
    assert after.get_requested_partitions(AssetKey("daily_revenue")) == set()


WRITER = textwrap.dedent(
    """
    import sys
    from regional_etl.spark.resource import SparkResource
    from regional_etl.contract import Table, schema
    from regional_etl.io.delta import regional_predicate, replace_partitions
    from regional_etl.partitions import DateRegion
    import datetime as dt
    path, region, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spark = SparkResource(session_config={"spark.sql.shuffle.partitions": "2"}).spark_session
    for n in range(rounds):
        day = (dt.date(2024, 3, 1) + dt.timedelta(days=n)).isoformat()
        rows = [(f"line {i}", f"f{n}", i, f"run-{region}-{n}", None, None,
                 dt.date.fromisoformat(day), region)
                for i in range(1, 51)]
        frame = spark.createDataFrame(rows, schema(Table.RAW_ORDERS))
        replace_partitions(frame, path, Table.RAW_ORDERS,
                           regional_predicate([DateRegion(day, region)]), f"run-{region}-{n}")
    print("done", region)
    """
)


@pytest.mark.slow
def test_parallel_writers_in_separate_processes_lose_nothing(spark, tmp_path: Path) -> None:
    """Two run processes writing disjoint partitions of one Delta table at the same time: Delta's
    optimistic concurrency (atomic log commits on the local file system) keeps every commit."""
    from regional_etl.contract import Table
    from regional_etl.io.delta import ensure_table, history

    path = str(tmp_path / "bronze" / "raw_orders")
    ensure_table(spark, path, Table.RAW_ORDERS)  # created once, before the writers start
    rounds = 6
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    argv = [[sys.executable, "-c", WRITER, path, region, str(rounds)] for region in REGIONS[:2]]
    with process_groups(
        *argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as writers:
        outputs = [w.communicate(timeout=600)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], outputs
    table = spark.read.format("delta").load(path)
    assert table.count() == 2 * rounds * 50
    counts = {
        (str(r.order_date), r.region): r["count"]
        for r in table.groupBy("order_date", "region").count().collect()
    }
    assert len(counts) == 2 * rounds and set(counts.values()) == {50}
    commits = history(spark, path).collect()
    writes = [h for h in commits if h["operation"] == "WRITE"]
    assert len(writes) == 2 * rounds
    assert {h["userMetadata"] for h in writes} == {
        f"run-{region}-{n}" for region in REGIONS[:2] for n in range(rounds)
    }


def test_landing_sensor_skips_drops_already_ingested_after_their_marker(
    pipeline: Pipeline, instance: DagsterInstance
) -> None:
    write_drop(pipeline.landing, "2024-03-08", "eu-west", [LINE])
    ingested = materialize(
        [raw_orders],
        partition_key="2024-03-08|eu-west",
        resources=pipeline.resources,
        instance=instance,
    )
    assert ingested.success
    # A sensor starting on an instance where a backfill already ran does not redo it.
    first = tick(instance, pipeline.landing, None)
    assert requested(first) == []
    # A redelivery after that ingestion is new again (its date has rates by now).
    instance.report_runless_asset_event(AssetMaterialization("fx_rates", partition="2024-03-08"))
    time.sleep(0.01)
    write_drop(pipeline.landing, "2024-03-08", "eu-west", [LINE], file_name="late.jsonl")
    later = tick(instance, pipeline.landing, first.cursor)
    assert ("regional_orders_job", "2024-03-08|eu-west") in requested(later)


def test_landing_sensor_counts_only_the_drops_that_really_wait(
    tmp_path: Path, instance: DagsterInstance, capfd: pytest.CaptureFixture[str]
) -> None:
    """Three drops more than a tick takes: the log says 3 wait, however many of the tick's
    batch were already ingested (those wait for nothing)."""
    from regional_etl.automation.sensors import MAX_REQUESTS_PER_TICK

    landing = tmp_path / "landing"
    days = [dt.date(2024, 2, 1) + dt.timedelta(days=n) for n in range(26)]
    # In the sensor's order (marker time, then partition key): ties on a coarse clock agree.
    keys = sorted((d.isoformat(), r) for d in days for r in REGIONS)[: MAX_REQUESTS_PER_TICK + 3]
    for date, region in keys:
        write_drop(landing, date, region, [LINE])
    for day in days:
        instance.report_runless_asset_event(
            AssetMaterialization("fx_rates", partition=day.isoformat())
        )
    # 60 of the first batch were ingested after their marker (by a backfill, say).
    for date, region in keys[:60]:
        instance.report_runless_asset_event(
            AssetMaterialization("raw_orders", partition=f"{date}|{region}")
        )
    capfd.readouterr()
    result = tick(instance, landing, None)
    logged = capfd.readouterr().err
    assert len(result.run_requests or []) == MAX_REQUESTS_PER_TICK - 60
    said = [line for line in logged.splitlines() if "wait for the next tick" in line]
    assert len(said) == 1 and "3 more drops wait for the next tick" in said[0], logged
