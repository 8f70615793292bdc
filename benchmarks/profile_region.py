"""Where one region's time goes: the steps of `raw_orders` + `orders`, timed one by one.

Runs the same region-range twice in one JVM (cold, then warm) with the functions the assets run
(`regional_etl.pipeline`) and the package's configuration, then repeats the warm run with one
setting changed at a time, so each proposal gets a number from the same process.
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

    from regional_etl.io.warehouse import WarehousePaths


def region_steps(
    spark: SparkSession,
    warehouse: WarehousePaths,
    dates: list[str],
    region: str,
    cluster_bronze: bool = False,
) -> dict[str, float]:
    """The Spark work of one region over the range, as the assets do it, timed per step."""
    from benchmarks.common import quality_gates
    from regional_etl.io.landing import count_lines, read_drops, ready_drop
    from regional_etl.partitions import DateRegion
    from regional_etl.pipeline import read_bronze, run_silver, write_bronze

    steps: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        steps[name] = round(now - mark, 3)
        mark = now

    partitions = [DateRegion(d, region) for d in dates]
    drops = [ready_drop(warehouse.landing, p) for p in partitions]
    count_lines(drops)
    lap("python: list drops + count landing lines")
    lines = read_drops(spark, warehouse.landing, drops)
    write_bronze(lines, warehouse, partitions, "profile", one_file_per_partition=cluster_bronze)
    lap("bronze: read landing + write + commit")
    bronze = read_bronze(spark, warehouse, partitions)
    run_silver(
        bronze,
        warehouse,
        partitions,
        "profile",
        quality_gates(),
        after_step=lambda step: lap(f"silver: {step}"),
    )
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
    from benchmarks.classic_spark import start_session
    from benchmarks.common import emit
    from regional_etl.partitions import date_range
    from regional_etl.resources.warehouse import WarehouseResource

    started = time.perf_counter()
    spark = start_session("local[*]", "2g", {})
    spark_start = time.perf_counter() - started
    dates = date_range(args.start, args.end)
    scratch = Path(tempfile.mkdtemp(prefix="regional-etl-profile-"))
    results: dict[str, Any] = {"spark_start_s": round(spark_start, 3)}
    try:
        warehouse = WarehouseResource(
            landing_root=args.landing, warehouse_root=str(scratch / "warehouse")
        ).paths()
        mark = time.perf_counter()
        write_fx(spark, warehouse, dates, "profile", sql=False)
        results["fx_first_write_s"] = round(time.perf_counter() - mark, 3)

        def run(name: str, **kwargs: Any) -> None:
            results[name] = region_steps(spark, warehouse, dates, args.region, **kwargs)
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
