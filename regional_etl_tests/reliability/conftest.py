"""Shared judging for the reliability scenarios: the tables against the oracle, a content
checksum per table, duplicate keys and lines lost, counted the same way in every scenario so
docs/reliability.md can put the figures side by side."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    RunsFilter,
    SensorResult,
    build_sensor_context,
    evaluate_automation_conditions,
)

from regional_etl.automation.sensors import landing_sensor
from regional_etl.contract import REGIONS
from regional_etl_tests.conftest import Pipeline
from regional_etl_tests.oracle import expected_partition

TABLES = (
    "bronze/raw_orders",
    "silver/orders",
    "silver/orders_quarantine",
    "gold/daily_revenue",
    "reference/fx_rates",
)
# What makes a row unique in each table: a second row with the same key is a duplicate.
KEYS = {
    "bronze/raw_orders": ("order_date", "region", "source_file", "line_number"),
    "silver/orders": ("order_date", "region", "order_id"),
    "silver/orders_quarantine": ("order_date", "region", "source_file", "line_number"),
    "gold/daily_revenue": ("order_date", "region"),
    "reference/fx_rates": ("order_date", "currency"),
}


def _frame(spark: Any, warehouse: Path, name: str) -> Any | None:
    path = warehouse / name
    if not (path / "_delta_log").exists():
        return None
    return spark.read.format("delta").load(str(path))


def table_rows(spark: Any, warehouse: Path, name: str) -> list[dict[str, Any]]:
    """Every row of a table without its run id (which differs by design between re-runs)."""
    frame = _frame(spark, warehouse, name)
    if frame is None:
        return []
    keep = [c for c in frame.columns if c != "run_id"]
    return [r.asDict() for r in frame.select(keep).collect()]


def checksum(rows: list[dict[str, Any]]) -> str:
    """sha256 of the rows sorted: equal content, equal checksum, whatever the file layout."""
    lines = sorted(repr(sorted(r.items())) for r in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def checksums(spark: Any, warehouse: Path) -> dict[str, str]:
    return {t: checksum(table_rows(spark, warehouse, t)) for t in TABLES}


def duplicate_keys(
    spark: Any, warehouse: Path, collected: Mapping[str, list[Any]] | None = None
) -> int:
    """Rows beyond the first with the same key, over every table. `collected` holds the rows
    (with their key's columns) of tables the caller has read anyway: those are counted from
    them, the others by Spark (the judge runs after every step of the crash scenarios: it
    neither collects a table twice nor asks Spark again about rows it holds)."""
    from pyspark.sql import functions as F

    extra = 0
    for name, key in KEYS.items():
        if collected is not None and name in collected:
            counts = Counter(tuple(r[k] for k in key) for r in collected[name])
            extra += sum(n - 1 for n in counts.values())
            continue
        frame = _frame(spark, warehouse, name)
        if frame is None:
            continue
        counts = frame.groupBy(*key).count().where(F.col("count") > 1)
        extra += counts.agg(F.sum(F.col("count") - 1)).first()[0] or 0
    return extra


def _rows(spark: Any, warehouse: Path, name: str, columns: list[str]) -> list[Any]:
    frame = _frame(spark, warehouse, name)
    return [] if frame is None else frame.select(*columns).collect()


@dataclass
class Verdict:
    """The warehouse judged against the oracle for a set of (date, region) partitions."""

    partitions: int = 0
    landing_lines: int = 0
    lines_lost: int = 0  # landing lines found neither in orders nor in quarantine
    duplicate_keys: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.lines_lost and not self.duplicate_keys

    def summary(self) -> str:
        return (
            f"partitions={self.partitions} landing_lines={self.landing_lines} "
            f"lines_lost={self.lines_lost} duplicate_keys={self.duplicate_keys} "
            f"mismatches={len(self.mismatches)}"
        )


def judge(spark: Any, landing: Path, warehouse: Path, partitions: list[tuple[str, str]]) -> Verdict:
    """Bronze, silver and gold of `partitions` against the oracle's reading of the landing zone;
    gold is judged for every date whose four regions are all in `partitions`."""
    verdict = Verdict(partitions=len(partitions))
    partition = ["order_date", "region"]
    raw = _frame(spark, warehouse, "bronze/raw_orders")
    bronze = Counter(
        {
            (r["order_date"], r["region"]): r["count"]
            for r in raw.groupBy(*partition).count().collect()
        }
        if raw is not None
        else {}
    )
    order_columns = ["order_id", "user_id", "amount", "currency", "order_ts", "fx_rate"]
    silver = _rows(spark, warehouse, "silver/orders", [*partition, *order_columns, "amount_usd"])
    quarantine = _rows(
        spark,
        warehouse,
        "silver/orders_quarantine",
        [*partition, "source_file", "line_number", "reason"],
    )
    gold_rows = _rows(
        spark, warehouse, "gold/daily_revenue", [*partition, "orders", "users", "revenue_usd"]
    )
    gold = {(r["order_date"], r["region"]): r for r in gold_rows}
    verdict.duplicate_keys = duplicate_keys(
        spark,
        warehouse,
        {
            "silver/orders": silver,
            "silver/orders_quarantine": quarantine,
            "gold/daily_revenue": gold_rows,
        },
    )
    by_date: dict[str, list[str]] = {}
    oracle: dict[tuple[str, str], Any] = {}
    for date, region in sorted(partitions):
        by_date.setdefault(date, []).append(region)
        day = dt.date.fromisoformat(date)
        want = oracle[(date, region)] = expected_partition(landing, date, region)
        verdict.landing_lines += want.lines
        got_orders = {
            r["order_id"]: (
                r["user_id"],
                r["amount"],
                r["currency"],
                r["order_ts"],
                r["fx_rate"],
                r["amount_usd"],
            )
            for r in silver
            if r["order_date"] == day and r["region"] == region
        }
        got_q = {
            (r["source_file"], r["line_number"]): r["reason"]
            for r in quarantine
            if r["order_date"] == day and r["region"] == region
        }
        verdict.lines_lost += max(0, want.lines - len(got_orders) - len(got_q))
        where = f"{date}|{region}"
        if bronze[(day, region)] != want.lines:
            verdict.mismatches.append(f"{where}: bronze {bronze[(day, region)]} != {want.lines}")
        if got_orders != want.orders:
            verdict.mismatches.append(f"{where}: orders differ from the oracle")
        if got_q != want.quarantine:
            verdict.mismatches.append(f"{where}: quarantine differs from the oracle")
    for date, regions in by_date.items():
        if sorted(regions) != sorted(REGIONS):
            continue
        for region in REGIONS:
            want = oracle[(date, region)]
            row = gold.get((dt.date.fromisoformat(date), region))
            expected = (
                len(want.orders),
                len({o[0] for o in want.orders.values()}),
                sum((o[5] for o in want.orders.values()), Decimal(0)),
            )
            got = None if row is None else (row["orders"], row["users"], row["revenue_usd"])
            if got != expected:
                verdict.mismatches.append(f"gold {date}|{region}: {got} != {expected}")
    return verdict


def materializations(instance: DagsterInstance, asset: str) -> Counter[str]:
    """Materializations of `asset` per partition key recorded on the instance."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset)), limit=10_000
    ).records
    return Counter(str(r.partition_key) for r in records)


# One Dagster run in a process of its own, on the instance in DAGSTER_HOME, with the test
# pipeline's resources: argv = landing warehouse fx_url breaker_file job partition
# [connect_retries], where partition is a key or a `first..last` range (the tags of a single-run
# backfill) and connect_retries, when given, replaces the Spark client's default.
RUN_LAUNCHER = """
import json, sys
from dagster import DagsterInstance
from regional_etl.checks import QualityGateResource
from regional_etl.definitions import build_definitions
from regional_etl.resources.fx import FXRatesResource
from regional_etl.spark.resource import SparkResource
from regional_etl.resources.warehouse import WarehouseResource

landing, warehouse, fx_url, breaker, job, partition = sys.argv[1:7]
retries = {"connect_retries": int(sys.argv[7])} if len(sys.argv) > 7 else {}
defs = build_definitions({
    "spark": SparkResource(session_config={"spark.sql.shuffle.partitions": "2"}, **retries),
    "warehouse": WarehouseResource(landing_root=landing, warehouse_root=warehouse),
    "quality_gates": QualityGateResource(min_rows=10, max_quarantine_ratio=0.5),
    "fx": FXRatesResource(base_url=fx_url, breaker_storage_url=f"sqlite:///{breaker}",
                          backoff_base_seconds=0.01, backoff_max_seconds=0.05),
})
if ".." in partition:
    first, last = partition.split("..")
    where = {"tags": {"dagster/asset_partition_range_start": first,
                      "dagster/asset_partition_range_end": last}}
else:
    where = {"partition_key": partition}
with DagsterInstance.get() as instance:
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, **where
    )
print(json.dumps({"run_id": result.run_id, "success": result.success}), flush=True)
"""


def launcher_argv(
    pipeline: Any, fx_url: str, job: str, partition: str, connect_retries: int | None = None
) -> list[str]:
    import sys

    breaker = pipeline.warehouse.parent / "breaker.sqlite"
    return [
        sys.executable,
        "-c",
        RUN_LAUNCHER,
        str(pipeline.landing),
        str(pipeline.warehouse),
        fx_url,
        str(breaker),
        job,
        partition,
        *([] if connect_retries is None else [str(connect_retries)]),
    ]


def launcher_env(dagster_home: Path, **extra: str) -> dict[str, str]:
    """The test's environment for a run process: this checkout first on the path (a clean
    clone has no editable install of it), the shared instance, and `extra`."""
    import os

    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root, "DAGSTER_HOME": str(dagster_home), **extra}


RUN_KEY = "dagster/run_key"


class Driver:
    """The daemon's part, done in the test process: tick the sensor, launch each request once
    per run key on the instance, then bring gold up to date through the automation condition."""

    def __init__(self, pipeline: Pipeline, instance: DagsterInstance) -> None:
        self.pipeline, self.instance = pipeline, instance
        self.cursor: str | None = None
        # The daemon's automation sensor has ticked before any drop lands (every 30 s): its
        # first evaluation is the baseline that later updates of the regions are seen against.
        self.automation_cursor = evaluate_automation_conditions(
            defs=pipeline.defs, instance=instance
        ).cursor
        self.launched: Counter[str] = Counter()
        self.deduplicated = 0

    def tick(self) -> list[str]:
        # Exited here: a context left open is collected in a later test and restores that
        # test's Dagster context to a deleted one.
        with build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={"warehouse": self.pipeline.resources["warehouse"]},
        ) as context:
            result = landing_sensor(context)
        if not isinstance(result, SensorResult):
            return []
        self.cursor = result.cursor or self.cursor
        done = []
        for request in result.run_requests or []:
            assert request.run_key and request.job_name and request.partition_key
            if self.instance.get_run_ids(filters=_run_key_filter(request.run_key)):
                self.deduplicated += 1  # the daemon launches a run key once
                continue
            job = self.pipeline.defs.resolve_job_def(request.job_name)
            run = job.execute_in_process(
                instance=self.instance,
                partition_key=request.partition_key,
                tags={**request.tags, RUN_KEY: request.run_key},
            )
            assert run.success, request
            self.launched[request.job_name] += 1
            done.append(request.partition_key)
        return done

    def settle(self) -> None:
        """Tick until the sensor asks for nothing (FX first, then the drops that waited for it),
        then run the daily_revenue partitions the automation condition requests."""
        for _ in range(5):
            if not self.tick():
                break
        result = evaluate_automation_conditions(
            defs=self.pipeline.defs, instance=self.instance, cursor=self.automation_cursor
        )
        self.automation_cursor = result.cursor
        gold = self.pipeline.defs.resolve_job_def("daily_revenue_job")
        for date in sorted(
            str(d) for d in result.get_requested_partitions(AssetKey("daily_revenue"))
        ):
            assert gold.execute_in_process(instance=self.instance, partition_key=date).success
            self.launched["daily_revenue_job"] += 1


def _run_key_filter(run_key: str) -> RunsFilter:
    return RunsFilter(tags={RUN_KEY: run_key})
