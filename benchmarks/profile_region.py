"""Where one region's time goes: the steps of `raw_orders` + `orders`, timed one by one.

Runs the same region-range twice in one JVM (cold, then warm) with the package's functions and
configuration (silver written one file per partition, as the asset does), then repeats the warm
run with one setting changed at a time, so each proposal gets a number from the same process.
Not part of the entry command's table: run it by hand.

    python -m benchmarks.profile_region --landing L --start D --end D [--region R]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def region_steps(
    spark: SparkSession,
    landing: str,
    warehouse: str,
    dates: list[str],
    region: str,
    cluster_bronze: bool = False,
) -> dict[str, float]:
    """The Spark work of one region over the range, as the assets do it, timed per step."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from benchmarks.bare_spark import fx_checked
    from regional_etl.contract import Table
    from regional_etl.io.delta import (
        read_table,
        regional_predicate,
        replace_partitions,
        table_path,
    )
    from regional_etl.io.landing import count_lines, read_drops, ready_drop
    from regional_etl.partitions import DateRegion
    from regional_etl.transforms.gates import gate_stats
    from regional_etl.transforms.orders import classify, convert, quarantine_rows, valid_orders

    steps: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        steps[name] = round(now - mark, 3)
        mark = now

    partitions = [DateRegion(d, region) for d in dates]
    predicate = regional_predicate(partitions)
    drops = [ready_drop(landing, p) for p in partitions]
    count_lines(drops)
    lap("python: list drops + count landing lines")
    lines = read_drops(spark, landing, drops).withColumn("run_id", F.lit("profile"))
    bronze_path = table_path(warehouse, Table.RAW_ORDERS)
    replace_partitions(
        lines,
        bronze_path,
        Table.RAW_ORDERS,
        predicate,
        "profile",
        one_file_per_partition=cluster_bronze,
    )
    lap("bronze: read landing + write + commit")
    bronze = read_table(spark, bronze_path).where(predicate)
    fx = fx_checked(spark, warehouse, dates)
    lap("silver: fx presence check")
    converted = convert(classify(bronze.drop("run_id")), fx).persist(StorageLevel.MEMORY_AND_DISK)
    gate_stats(converted).collect()
    lap("silver: read bronze + classify + convert + cache + gate")
    replace_partitions(
        valid_orders(converted, "profile"),
        table_path(warehouse, Table.ORDERS),
        Table.ORDERS,
        predicate,
        "profile",
        one_file_per_partition=True,
    )
    lap("silver: write orders")
    replace_partitions(
        quarantine_rows(converted, "profile"),
        table_path(warehouse, Table.ORDERS_QUARANTINE),
        Table.ORDERS_QUARANTINE,
        predicate,
        "profile",
        one_file_per_partition=True,
    )
    lap("silver: write quarantine")
    converted.unpersist()
    steps["total"] = round(sum(steps.values()), 3)
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--landing", required=True)
    parser.add_argument("--start", required=True)
    parser.add_argument("--end", required=True)
    parser.add_argument("--region", default="eu-west")
    args = parser.parse_args(argv)

    from benchmarks.bare_spark import write_fx
    from benchmarks.common import emit
    from regional_etl.backfill import date_range
    from regional_etl.resources.spark import start_session

    started = time.perf_counter()
    spark = start_session("local[*]", "2g", {})
    spark_start = time.perf_counter() - started
    dates = date_range(args.start, args.end)
    landing = str(Path(args.landing).resolve())
    scratch = Path(tempfile.mkdtemp(prefix="regional-etl-profile-"))
    results: dict[str, Any] = {"spark_start_s": round(spark_start, 3)}
    try:
        warehouse = str(scratch / "warehouse")
        mark = time.perf_counter()
        write_fx(spark, warehouse, dates, "profile", sql=False)
        results["fx_first_write_s"] = round(time.perf_counter() - mark, 3)

        def run(name: str, **kwargs: Any) -> None:
            results[name] = region_steps(spark, landing, warehouse, dates, args.region, **kwargs)
            print(name, results[name], flush=True)

        def with_conf(key: str, value: str, fn: Callable[[], None]) -> None:
            old = spark.conf.get(key, None)
            spark.conf.set(key, value)
            try:
                fn()
            finally:
                if old is None:
                    spark.conf.unset(key)
                else:
                    spark.conf.set(key, old)

        run("cold")
        run("warm")
        run("warm_again")
        run("cluster_bronze", cluster_bronze=True)
        with_conf("spark.sql.shuffle.partitions", "2", lambda: run("shuffle_partitions_2"))
        with_conf("spark.sql.shuffle.partitions", "8", lambda: run("shuffle_partitions_8"))
        with_conf(
            "spark.databricks.delta.optimizeWrite.enabled",
            "true",
            lambda: run("delta_optimize_write"),
        )
        run("warm_last")
    finally:
        spark.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    emit(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
