"""Worker (c): the same pipeline as a bare PySpark script, no Dagster at all.

It calls the functions the assets call (`regional_etl.pipeline` for bronze and silver) with the
package's Spark configuration, in the order our backfill runs them: FX rates of the range, then
per region over the whole range bronze and silver, then gold. It issues the same Spark jobs as
the assets do, so (b) - (c) is what Dagster adds, not a difference in Spark work.

`--optimized` runs the variant the benchmark README proposes for the package, to put a number on
each proposal (see `region_range`, `write_fx` and `gold`).

    python -m benchmarks.bare_spark --landing L --warehouse W --start D --end D [--optimized]
        [--regions R,...]   # default: every region of the contract
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

T0 = time.perf_counter()

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from regional_etl.io.warehouse import WarehousePaths


def fx_rows(dates: list[str]) -> list[tuple[dt.date, str, Decimal]]:
    """What `fx_rates` publishes for these dates, from the bundled FX source in-process."""
    from regional_etl.contract import CURRENCIES
    from regional_etl.fx.rates import BundledSource

    rows = []
    for day in map(dt.date.fromisoformat, dates):
        quote = BundledSource().get_usd_rates(day, CURRENCIES)
        rows.extend((day, currency, quote.usd_per_unit[currency]) for currency in CURRENCIES)
    return rows


def write_fx(
    spark: SparkSession, warehouse: WarehousePaths, dates: list[str], run_id: str, sql: bool
) -> Any:
    """The fx_rates asset's write. `sql=True` builds the rows as a SQL VALUES relation instead
    of `createDataFrame(list)`, which ships pickled rows through Python workers."""
    from regional_etl.contract import Table, schema
    from regional_etl.io.delta import daily_predicate, replace_partitions

    rows = fx_rows(dates)
    if sql:
        values = ", ".join(
            f"(DATE '{d}', '{c}', CAST('{r}' AS DECIMAL(20,10)))" for d, c, r in rows
        )
        frame = spark.sql(f"SELECT * FROM VALUES {values} AS t(order_date, currency, usd_per_unit)")
    else:
        frame = spark.createDataFrame(rows, schema(Table.FX_RATES))
    return replace_partitions(
        frame.coalesce(1),
        warehouse.table(Table.FX_RATES),
        Table.FX_RATES,
        daily_predicate(dates),
        run_id,
    )


def region_range(
    spark: SparkSession,
    warehouse: WarehousePaths,
    dates: list[str],
    region: str,
    run_id: str,
    optimized: bool,
) -> dict[str, Any]:
    """One region over the range, as `raw_orders` then `orders` do it.

    Optimized, the proposals: the landing lines are read once, cached, and silver is computed
    from the cache instead of from the bronze partitions read back from Delta; the bronze write
    is clustered by its partition columns too (the package clusters only the silver writes), so
    each (date, region) folder gets one file instead of one per task.
    """
    from pyspark import StorageLevel

    from benchmarks.common import quality_gates
    from regional_etl.io.landing import count_lines, read_drops, ready_drop
    from regional_etl.partitions import DateRegion
    from regional_etl.pipeline import read_bronze, run_silver, write_bronze

    partitions = [DateRegion(d, region) for d in dates]
    drops = [ready_drop(warehouse.landing, p) for p in partitions]
    lines = read_drops(spark, warehouse.landing, drops)
    if optimized:
        lines = lines.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        bronze = write_bronze(
            lines, warehouse, partitions, run_id, one_file_per_partition=optimized
        )
        landing_lines = count_lines(drops)
        silver_input = lines if optimized else read_bronze(spark, warehouse, partitions)
        silver = run_silver(silver_input, warehouse, partitions, run_id, quality_gates())
    finally:
        if optimized:
            lines.unpersist()
    return {
        "bronze_rows": bronze.rows,
        "landing_lines": landing_lines,
        "orders": silver.orders.rows,
        "gate_rows": len(silver.stats),
    }


def gold(
    spark: SparkSession,
    warehouse: WarehousePaths,
    dates: list[str],
    run_id: str,
    optimized: bool,
) -> int:
    """The daily_revenue asset: aggregate, write, read back for the totals gate.

    Optimized: the aggregate is cached and written as a DataFrame, instead of being collected and
    re-created with `createDataFrame` (Python workers) before the write.
    """
    from regional_etl.contract import Table, schema
    from regional_etl.io.delta import daily_predicate, read_table, replace_partitions
    from regional_etl.transforms.revenue import daily_revenue

    predicate = daily_predicate(dates)
    orders = read_table(spark, warehouse.table(Table.ORDERS)).where(predicate)
    path = warehouse.table(Table.DAILY_REVENUE)
    if optimized:
        aggregated = daily_revenue(orders).coalesce(1).cache()
        expected = aggregated.collect()
        replace_partitions(aggregated, path, Table.DAILY_REVENUE, predicate, run_id)
        aggregated.unpersist()
    else:
        expected = daily_revenue(orders).collect()
        frame = spark.createDataFrame(expected, schema(Table.DAILY_REVENUE)).coalesce(1)
        replace_partitions(frame, path, Table.DAILY_REVENUE, predicate, run_id)
    written = read_table(spark, path).where(predicate).collect()
    assert len(written) == len(expected), (len(written), len(expected))
    return len(written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--landing", required=True)
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--start", required=True)
    parser.add_argument("--end", required=True)
    parser.add_argument("--optimized", action="store_true")
    parser.add_argument("--regions", help="comma-separated regions (default: all of them)")
    parser.add_argument("--spark-conf", default="{}", help="JSON of extra Spark settings")
    args = parser.parse_args(argv)

    from benchmarks.classic_spark import start_session
    from benchmarks.common import emit
    from regional_etl.contract import REGIONS
    from regional_etl.partitions import date_range
    from regional_etl.resources.warehouse import WarehouseResource

    dates = date_range(args.start, args.end)
    regions = args.regions.split(",") if args.regions else list(REGIONS)
    paths = WarehouseResource(landing_root=args.landing, warehouse_root=args.warehouse).paths()
    run_id = f"bare-{uuid.uuid4()}"
    phases: dict[str, float] = {}
    mark = time.perf_counter()
    phases["imports"] = mark - T0

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now

    # A classic session in this process: what a user writes without the product.
    spark = start_session("local[*]", "2g", json.loads(args.spark_conf))
    lap("spark_start")
    write_fx(spark, paths, dates, run_id, sql=args.optimized)
    lap("fx_rates")
    per_region = {}
    for region in regions:
        per_region[region] = region_range(spark, paths, dates, region, run_id, args.optimized)
        lap(f"region {region}")
    gold_rows = gold(spark, paths, dates, run_id, args.optimized)
    lap("daily_revenue")
    spark.stop()
    lap("spark_stop")
    ok = all(r["bronze_rows"] == r["landing_lines"] for r in per_region.values())
    emit(
        {
            "ok": ok and gold_rows == len(dates) * len(regions),
            "optimized": args.optimized,
            "phases_s": {k: round(v, 3) for k, v in phases.items()},
            "regions": per_region,
        }
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
