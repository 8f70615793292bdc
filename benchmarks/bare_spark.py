"""Worker (c): the same pipeline as a bare PySpark script, no Dagster at all.

It calls the package's pure functions (landing reader, transforms, gate statistics, Delta
writes) with the package's Spark configuration, in the order our backfill runs them: FX rates
of the range, then per region over the whole range bronze and silver, then gold. It issues the
same Spark jobs as the assets do (gate statistics, the FX presence check, gold's read-back), so
(b) - (c) is what Dagster adds, not a difference in Spark work.

`--optimized` runs the variant the benchmark README proposes for the package, to put a number on
each proposal (see `optimized_region` and `write_fx`).

    python -m benchmarks.bare_spark --landing L --warehouse W --start D --end D [--optimized]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import uuid
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

T0 = time.perf_counter()

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

USD_PER_UNIT_QUANTUM = Decimal("0.0000000001")


def fx_rows(dates: list[str]) -> list[tuple[dt.date, str, Decimal]]:
    """What the FX service answers, computed in-process from the bundled ECB history.

    Same numbers as `FXRatesResource`: units per USD rounded to 6 places by the service, then
    inverted and rounded half-up to 10 places.
    """
    from regional_etl.contract import CURRENCIES
    from regional_etl.fx.rates import rates_for

    rows = []
    for date in dates:
        day = dt.date.fromisoformat(date)
        others = [c for c in CURRENCIES if c != "USD"]
        _, per_usd = rates_for(day, "USD", others)
        for currency in CURRENCIES:
            usd_per_unit = (
                Decimal(1)
                if currency == "USD"
                else (Decimal(1) / Decimal(str(float(per_usd[currency])))).quantize(
                    USD_PER_UNIT_QUANTUM, rounding=ROUND_HALF_UP
                )
            )
            rows.append((day, currency, usd_per_unit))
    return rows


def write_fx(spark: SparkSession, warehouse: str, dates: list[str], run_id: str, sql: bool) -> Any:
    """The fx_rates asset's write. `sql=True` builds the rows as a SQL VALUES relation instead
    of `createDataFrame(list)`, which ships pickled rows through Python workers."""
    from regional_etl.contract import Table, schema
    from regional_etl.io.delta import daily_predicate, replace_partitions, table_path

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
        table_path(warehouse, Table.FX_RATES),
        Table.FX_RATES,
        daily_predicate(dates),
        run_id,
    )


def fx_checked(spark: SparkSession, warehouse: str, dates: list[str]) -> DataFrame:
    """The range's FX rates, after the `orders` asset's presence check (the same Spark job)."""
    from regional_etl.contract import Table
    from regional_etl.io.delta import daily_predicate, read_table, table_path

    fx = read_table(spark, table_path(warehouse, Table.FX_RATES)).where(daily_predicate(dates))
    have_fx = {str(r.order_date) for r in fx.select("order_date").distinct().collect()}
    assert have_fx == set(dates), f"missing fx for {set(dates) - have_fx}"
    return fx


def mirrored_region(
    spark: SparkSession, landing: str, warehouse: str, dates: list[str], region: str, run_id: str
) -> dict[str, Any]:
    """One region over the range, as `raw_orders` then `orders` do it."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

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
    from regional_etl.transforms.orders import (
        classify,
        convert,
        quarantine_rows,
        valid_orders,
    )

    partitions = [DateRegion(d, region) for d in dates]
    predicate = regional_predicate(partitions)
    drops = [ready_drop(landing, p) for p in partitions]
    lines = read_drops(spark, landing, drops).withColumn("run_id", F.lit(run_id))
    bronze_path = table_path(warehouse, Table.RAW_ORDERS)
    bronze_written = replace_partitions(lines, bronze_path, Table.RAW_ORDERS, predicate, run_id)
    landing_lines = count_lines(drops)

    bronze = read_table(spark, bronze_path).where(predicate)
    fx = fx_checked(spark, warehouse, dates)
    converted = convert(classify(bronze.drop("run_id")), fx).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        stats = gate_stats(converted).collect()
        for p in partitions:  # the asset reconciles every partition against the landing files
            count_lines([ready_drop(landing, p)])
        orders = replace_partitions(
            valid_orders(converted, run_id),
            table_path(warehouse, Table.ORDERS),
            Table.ORDERS,
            predicate,
            run_id,
            one_file_per_partition=True,
        )
        replace_partitions(
            quarantine_rows(converted, run_id),
            table_path(warehouse, Table.ORDERS_QUARANTINE),
            Table.ORDERS_QUARANTINE,
            predicate,
            run_id,
            one_file_per_partition=True,
        )
    finally:
        converted.unpersist()
    return {
        "bronze_rows": bronze_written.rows,
        "landing_lines": landing_lines,
        "orders": orders.rows,
        "gate_rows": len(stats),
    }


def optimized_region(
    spark: SparkSession, landing: str, warehouse: str, dates: list[str], region: str, run_id: str
) -> dict[str, Any]:
    """The proposals, applied to one region over the range:

    - the landing lines are read once, cached, and both bronze and silver are computed from the
      cache (the mirrored path writes bronze, then reads the same partitions back from Delta);
    - the bronze write is clustered by its partition columns too (the package clusters only the
      silver writes), so each (date, region) folder gets one file instead of one per task;
    - the landing files are counted once (the assets count them in bronze and again in silver).
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from regional_etl.contract import Table
    from regional_etl.io.delta import (
        regional_predicate,
        replace_partitions,
        table_path,
    )
    from regional_etl.io.landing import count_lines, read_drops, ready_drop
    from regional_etl.partitions import DateRegion
    from regional_etl.transforms.gates import gate_stats
    from regional_etl.transforms.orders import (
        classify,
        convert,
        quarantine_rows,
        valid_orders,
    )

    partitions = [DateRegion(d, region) for d in dates]
    predicate = regional_predicate(partitions)
    drops = [ready_drop(landing, p) for p in partitions]
    lines = read_drops(spark, landing, drops).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        bronze_written = replace_partitions(
            lines.withColumn("run_id", F.lit(run_id)),
            table_path(warehouse, Table.RAW_ORDERS),
            Table.RAW_ORDERS,
            predicate,
            run_id,
            one_file_per_partition=True,
        )
        landing_lines = count_lines(drops)
        fx = fx_checked(spark, warehouse, dates)
        converted = convert(classify(lines), fx).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            stats = gate_stats(converted).collect()
            orders = replace_partitions(
                valid_orders(converted, run_id),
                table_path(warehouse, Table.ORDERS),
                Table.ORDERS,
                predicate,
                run_id,
                one_file_per_partition=True,
            )
            replace_partitions(
                quarantine_rows(converted, run_id),
                table_path(warehouse, Table.ORDERS_QUARANTINE),
                Table.ORDERS_QUARANTINE,
                predicate,
                run_id,
                one_file_per_partition=True,
            )
        finally:
            converted.unpersist()
    finally:
        lines.unpersist()
    return {
        "bronze_rows": bronze_written.rows,
        "landing_lines": landing_lines,
        "orders": orders.rows,
        "gate_rows": len(stats),
    }


def gold(
    spark: SparkSession, warehouse: str, dates: list[str], run_id: str, optimized: bool
) -> int:
    """The daily_revenue asset: aggregate, write, read back for the totals gate.

    Optimized: the aggregate is cached and written as a DataFrame, instead of being collected and
    re-created with `createDataFrame` (Python workers) before the write.
    """
    from regional_etl.contract import Table, schema
    from regional_etl.io.delta import daily_predicate, read_table, replace_partitions, table_path
    from regional_etl.transforms.revenue import daily_revenue

    predicate = daily_predicate(dates)
    orders = read_table(spark, table_path(warehouse, Table.ORDERS)).where(predicate)
    path = table_path(warehouse, Table.DAILY_REVENUE)
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
    parser.add_argument("--spark-conf", default="{}", help="JSON of extra Spark settings")
    args = parser.parse_args(argv)

    from benchmarks.common import emit
    from regional_etl.backfill import date_range
    from regional_etl.contract import REGIONS
    from regional_etl.resources.spark import start_session

    dates = date_range(args.start, args.end)
    landing = str(Path(args.landing).resolve())
    warehouse = str(Path(args.warehouse).resolve())
    run_id = f"bare-{uuid.uuid4()}"
    phases: dict[str, float] = {}
    mark = time.perf_counter()
    phases["imports"] = mark - T0

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now

    # The package's session, exactly as SparkResource() starts it for a local run.
    spark = start_session("local[*]", "2g", json.loads(args.spark_conf))
    lap("spark_start")
    write_fx(spark, warehouse, dates, run_id, sql=args.optimized)
    lap("fx_rates")
    per_region = {}
    region_fn = optimized_region if args.optimized else mirrored_region
    for region in REGIONS:
        per_region[region] = region_fn(spark, landing, warehouse, dates, region, run_id)
        lap(f"region {region}")
    gold_rows = gold(spark, warehouse, dates, run_id, args.optimized)
    lap("daily_revenue")
    spark.stop()
    lap("spark_stop")
    ok = all(r["bronze_rows"] == r["landing_lines"] for r in per_region.values())
    emit(
        {
            "ok": ok and gold_rows == len(dates) * len(REGIONS),
            "optimized": args.optimized,
            "phases_s": {k: round(v, 3) for k, v in phases.items()},
            "regions": per_region,
        }
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
