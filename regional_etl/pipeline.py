"""The bronze, silver and gold steps as plain functions on paths, outside Dagster: the assets wrap
them, and the benchmarks run the same code without Dagster."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import unquote

from regional_etl.checks import (
    QualityGateResource,
    Verdict,
    orders_verdicts,
    revenue_verdicts,
    schema_problems,
)
from regional_etl.contract import REGIONS, Table, schema
from regional_etl.io.delta import (
    WriteResult,
    daily_predicate,
    read_pinned,
    read_table,
    regional_predicate,
    replace_partitions,
)
from regional_etl.io.landing import DropNotReadyError, LandingFileError, count_lines, ready_drop
from regional_etl.io.warehouse import WarehousePaths
from regional_etl.partitions import DateRegion
from regional_etl.transforms.gates import PartitionStats
from regional_etl.transforms.revenue import daily_revenue
from regional_etl.transforms.silver import silver_frames

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import DataFrame, Row, SparkSession


class MissingFXRatesError(RuntimeError):
    """Some dates of a silver run have no row in `reference/fx_rates` yet."""

    def __init__(self, dates: list[str]) -> None:
        super().__init__(f"no fx_rates for {', '.join(dates)}")
        self.dates = dates


def write_bronze(
    lines: DataFrame,
    warehouse: WarehousePaths,
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
        guard=warehouse.commit_guard,
    )


def read_bronze(
    spark: SparkSession, warehouse: WarehousePaths, partitions: Sequence[DateRegion]
) -> DataFrame:
    """The bronze lines of `partitions` at the table's current version, for every action."""
    return read_pinned(spark, warehouse.table(Table.RAW_ORDERS)).where(
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
    warehouse: WarehousePaths,
    partitions: Sequence[DateRegion],
    run_id: str,
    gates: QualityGateResource,
    after_step: Callable[[str], None] = lambda step: None,
    sized: Callable[[int], object] = lambda lines: None,
) -> SilverRun:
    """Classify, convert and gate the bronze lines of `partitions`, then publish them:
    write-audit-publish, so a partition that fails a blocking gate has its silver/orders partition
    emptied and only its line-level rejects written. `bronze` is `read_bronze(...)`, pinned to
    one version. `after_step` is called with each step's name as it ends (the profile times
    them). `sized` is called with the run's landing lines before the classifying job (the asset
    chooses its session's evaluation mode by them). `MissingFXRatesError` before any write if a
    date has no FX rates.

    Why every table is read pinned (`read_pinned`) and the cached frame carries the run id
    (`silver_frames`): the gate pass and the two writes are three actions, and Spark Connect
    sends the plan again with each; an unpinned Delta read resolves the newest version each
    time, so with other runs committing to `bronze/raw_orders` the writes could publish lines
    the gates never counted. The cache does not hold a version either: every session shares
    the server's one CacheManager, which matches by plan, so runs of the same partitions would
    share one entry that either run's `unpersist` drops, and a commit to a table clears every
    cached unpinned plan that reads it (rebuilt from the newest version at the next action).
    Pinned, the cache is a speed-up and never decides what a run reads.
    """
    from pyspark import StorageLevel

    spark = bronze.sparkSession
    landing = snapshot_landing_lines(warehouse.landing, _files_of(bronze), partitions)
    sized(sum(n for n in landing.values() if n > 0))
    dates = sorted({p.order_date for p in partitions})
    fx = read_pinned(spark, warehouse.table(Table.FX_RATES)).where(daily_predicate(dates))
    have_fx = {str(r.order_date) for r in fx.select("order_date").distinct().collect()}
    if missing := sorted(set(dates) - have_fx):
        raise MissingFXRatesError(missing)
    after_step("fx presence check")

    frames = silver_frames(bronze, fx, run_id)
    frames.lines.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        gate_stats = frames.gate_stats.collect()
        stats = _partition_stats(gate_stats, partitions, landing)
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
            guard=warehouse.commit_guard,
        )
        after_step("write orders")
        quarantine = replace_partitions(
            frames.quarantine,
            warehouse.table(Table.ORDERS_QUARANTINE),
            Table.ORDERS_QUARANTINE,
            regional_predicate(partitions),
            run_id,
            one_file_per_partition=True,
            guard=warehouse.commit_guard,
        )
        after_step("write quarantine")
    finally:
        frames.lines.unpersist()
    return SilverRun(stats, verdicts, orders, quarantine)


@dataclass(frozen=True)
class GoldRun:
    """What one gold run aggregated from silver, wrote and judged, by date."""

    expected: dict[str, dict[str, tuple]]  # (orders, users, revenue_usd) by date, then region
    written: dict[str, dict[str, tuple]]  # the same, read back from the commit: written dates
    result: WriteResult | None  # None: no date had all its regions
    verdicts: dict[str, list[Verdict]]

    @property
    def blocked(self) -> dict[str, list[str]]:
        """Dates not aggregated, with the regions that have no published orders."""
        return {
            d: sorted(set(REGIONS) - set(by_region))
            for d, by_region in self.expected.items()
            if d not in self.written
        }


def run_gold(
    spark: SparkSession,
    warehouse: WarehousePaths,
    dates: Sequence[str],
    run_id: str,
    sized: Callable[[int], object] = lambda rows: None,
) -> GoldRun:
    """Aggregate silver orders of `dates` into `gold/daily_revenue`, only for dates whose four
    regions all published: a region that failed its gate (its silver partition is empty) or was
    never processed blocks its date, and only its date. Each date is judged on what the commit
    holds, read back, since a concurrent run of the same dates may commit after ours. `sized` is
    called with the orders' rows before the aggregation (the asset sizes its session by them).
    """
    # One silver version for the count and the aggregation, whatever other runs commit.
    orders = read_pinned(spark, warehouse.table(Table.ORDERS)).where(daily_predicate(dates))
    sized(orders.count())  # reads no column: Parquet footers only
    # Four rows a date: collected once, for the write and for the totals gate.
    aggregated = daily_revenue(orders).collect()
    expected = _by_date_and_region(aggregated, dates)
    complete = [d for d in dates if set(expected[d]) == set(REGIONS)]
    written: dict[str, dict[str, tuple]] = {}
    result = None
    if complete:
        rows = [r for r in aggregated if str(r["order_date"]) in complete]
        frame = spark.createDataFrame(rows, schema(Table.DAILY_REVENUE)).coalesce(1)
        result = replace_partitions(
            frame,
            warehouse.table(Table.DAILY_REVENUE),
            Table.DAILY_REVENUE,
            daily_predicate(complete),
            run_id,
            guard=warehouse.commit_guard,
        )
        commit = read_table(spark, result.path, result.version).where(daily_predicate(complete))
        written = _by_date_and_region(commit.collect(), complete)
    verdicts = {d: revenue_verdicts(expected[d], written.get(d)) for d in dates}
    return GoldRun(expected, written, result, verdicts)


def _by_date_and_region(rows: list[Row], dates: Sequence[str]) -> dict[str, dict[str, tuple]]:
    """(orders, users, revenue_usd) by date, then region, of daily_revenue rows."""
    by_date: dict[str, dict[str, tuple]] = {d: {} for d in dates}
    for r in rows:
        by_date[str(r["order_date"])][r["region"]] = (r["orders"], r["users"], r["revenue_usd"])
    return by_date


def snapshot_landing_lines(
    landing: Path, files: Mapping[DateRegion, set[str]], partitions: Sequence[DateRegion]
) -> dict[DateRegion, int]:
    """What the reconciliation gate compares bronze with: the landing lines of the files that
    the run's bronze snapshot holds (`files`: `source_file`s per partition), counted outside
    Spark. A file the drop gained after that snapshot was ingested (a redelivery) belongs to the
    next ingest, and counting it would fail a run that read a consistent snapshot; `raw_orders`
    checks at its write that it ingested every file of the drop. A snapshot holding nothing of
    a drop that has files counts the whole drop. -1 when the drop is being redelivered, lost a
    file of the snapshot or has one that can no longer be read: it cannot be reconciled now."""
    counts: dict[DateRegion, int] = {}
    for p in partitions:
        try:
            drop = ready_drop(landing, p)
        except DropNotReadyError:
            counts[p] = -1
            continue
        # Spark names a file by its URI path: a space or `%` in a name comes percent-encoded.
        held = {unquote(f) for f in files.get(p, set())}
        root = drop.path.parent.parent
        kept = tuple(f for f in drop.files if f.relative_to(root).as_posix() in held)
        if len(kept) != len(held):
            counts[p] = -1
            continue
        try:
            counts[p] = count_lines([replace(drop, files=kept) if held else drop])
        except LandingFileError:
            counts[p] = -1
    return counts


def _files_of(lines: DataFrame) -> dict[DateRegion, set[str]]:
    """The landing files each partition's lines come from (partition columns and one string
    column: Parquet reads little of bronze)."""
    files: dict[DateRegion, set[str]] = {}
    for r in lines.select("order_date", "region", "source_file").distinct().collect():
        files.setdefault(DateRegion(str(r["order_date"]), r["region"]), set()).add(r["source_file"])
    return files


def _partition_stats(
    gate_stats: list[Row], partitions: Sequence[DateRegion], landing: Mapping[DateRegion, int]
) -> dict[DateRegion, PartitionStats]:
    """The one-pass gate numbers, with each partition's landing lines."""
    collected = {(str(r["order_date"]), r["region"]): r.asDict() for r in gate_stats}
    result: dict[DateRegion, PartitionStats] = {}
    for p in partitions:
        row = collected.get((p.order_date, p.region))
        if row is None:
            result[p] = PartitionStats.empty(landing[p])
            continue
        del row["order_date"], row["region"]
        result[p] = PartitionStats(**row, landing_lines=landing[p])
    return result
