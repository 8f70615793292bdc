"""The bronze and silver steps as plain functions, outside Dagster: the assets wrap them, and the
benchmarks run the same code without Dagster."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regional_etl.checks import QualityGateResource, Verdict, orders_verdicts, schema_problems
from regional_etl.contract import Table, schema
from regional_etl.io.delta import (
    WriteResult,
    daily_predicate,
    read_table,
    regional_predicate,
    replace_partitions,
)
from regional_etl.io.landing import DropNotReadyError, LandingFileError, count_lines, ready_drop
from regional_etl.partitions import DateRegion
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.transforms.gates import PartitionStats
from regional_etl.transforms.silver import silver_frames

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import DataFrame, SparkSession


class MissingFXRatesError(RuntimeError):
    """Some dates of a silver run have no row in `reference/fx_rates` yet."""

    def __init__(self, dates: list[str]) -> None:
        super().__init__(f"no fx_rates for {', '.join(dates)}")
        self.dates = dates


def write_bronze(
    lines: DataFrame,
    warehouse: WarehouseResource,
    partitions: Sequence[DateRegion],
    run_id: str,
    one_file_per_partition: bool = False,
) -> WriteResult:
    """Replace the partitions of `bronze/raw_orders` with the landing lines, tagged with the run."""
    from pyspark.sql import functions as F

    return replace_partitions(
        lines.withColumn("run_id", F.lit(run_id)),
        warehouse.table(Table.RAW_ORDERS),
        Table.RAW_ORDERS,
        regional_predicate(partitions),
        run_id,
        one_file_per_partition=one_file_per_partition,
    )


def read_bronze(
    spark: SparkSession, warehouse: WarehouseResource, partitions: Sequence[DateRegion]
) -> DataFrame:
    return read_table(spark, warehouse.table(Table.RAW_ORDERS)).where(
        regional_predicate(partitions)
    )


@dataclass(frozen=True)
class SilverRun:
    """What one silver run found and wrote, for the asset's events."""

    stats: dict[DateRegion, PartitionStats]
    verdicts: dict[DateRegion, list[Verdict]]
    orders: WriteResult
    quarantine: WriteResult

    @property
    def blocked(self) -> list[DateRegion]:
        """Partitions that failed a blocking gate: their silver/orders partition is empty."""
        return [p for p, verdicts in self.verdicts.items() if any(v.blocks for v in verdicts)]


def run_silver(
    bronze: DataFrame,
    warehouse: WarehouseResource,
    partitions: Sequence[DateRegion],
    run_id: str,
    gates: QualityGateResource,
    after_step: Callable[[str], None] = lambda step: None,
    landing: Mapping[DateRegion, int] | None = None,
) -> SilverRun:
    """Classify, convert and gate the bronze lines of `partitions`, then publish them:
    write-audit-publish, so a partition that fails a blocking gate has its silver/orders partition
    emptied and only its line-level rejects written. `after_step` is called with each step's name
    as it ends (the profile times them). `landing` is `landing_lines(...)` of the partitions if
    the caller has it already. `MissingFXRatesError` before any write if a date has no FX
    rates."""
    from pyspark import StorageLevel

    spark = bronze.sparkSession
    dates = sorted({p.order_date for p in partitions})
    fx = read_table(spark, warehouse.table(Table.FX_RATES)).where(daily_predicate(dates))
    have_fx = {str(r.order_date) for r in fx.select("order_date").distinct().collect()}
    if missing := sorted(set(dates) - have_fx):
        raise MissingFXRatesError(missing)
    after_step("fx presence check")

    frames = silver_frames(bronze, fx, run_id)
    frames.lines.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        if landing is None:
            landing = landing_lines(warehouse.landing(), partitions)
        stats = _partition_stats(frames.gate_stats, partitions, landing)
        problems = schema_problems(frames.orders.schema, schema(Table.ORDERS))
        verdicts = {p: orders_verdicts(stats[p], problems, gates) for p in partitions}
        after_step("classify + convert + cache + gate")
        published = [p for p in partitions if not any(v.blocks for v in verdicts[p])]
        # The replaced range covers every partition of the run: blocked ones become empty.
        # The dedup window spread each partition's rows over every task: regroup them, or each
        # (date, region) folder gets one small file per task.
        orders = replace_partitions(
            frames.orders.where(regional_predicate(published) if published else "false"),
            warehouse.table(Table.ORDERS),
            Table.ORDERS,
            regional_predicate(partitions),
            run_id,
            one_file_per_partition=True,
        )
        after_step("write orders")
        quarantine = replace_partitions(
            frames.quarantine,
            warehouse.table(Table.ORDERS_QUARANTINE),
            Table.ORDERS_QUARANTINE,
            regional_predicate(partitions),
            run_id,
            one_file_per_partition=True,
        )
        after_step("write quarantine")
    finally:
        frames.lines.unpersist()
    return SilverRun(stats, verdicts, orders, quarantine)


def landing_lines(landing: Path, partitions: Sequence[DateRegion]) -> dict[DateRegion, int]:
    """The lines of each partition's landing drop, counted outside Spark, for the gates to
    reconcile with; -1 for a drop being redelivered or no longer readable (it cannot be
    reconciled now, so its partition is not published)."""
    counts: dict[DateRegion, int] = {}
    for p in partitions:
        try:
            counts[p] = count_lines([ready_drop(landing, p)])
        except (DropNotReadyError, LandingFileError):
            counts[p] = -1
    return counts


def _partition_stats(
    gate_stats: DataFrame, partitions: Sequence[DateRegion], landing: Mapping[DateRegion, int]
) -> dict[DateRegion, PartitionStats]:
    """Collect the one-pass gate numbers, with each partition's landing lines."""
    collected = {(str(r["order_date"]), r["region"]): r.asDict() for r in gate_stats.collect()}
    result: dict[DateRegion, PartitionStats] = {}
    for p in partitions:
        row = collected.get((p.order_date, p.region))
        if row is None:
            result[p] = PartitionStats.empty(landing[p])
            continue
        del row["order_date"], row["region"]
        result[p] = PartitionStats(**row, landing_lines=landing[p])
    return result
