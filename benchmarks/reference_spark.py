"""Reference (r): the data contract as a straightforward PySpark script, no Dagster.

A FIXED REFERENCE: it is what the pipeline must beat (`regional-etl backfill` <= 0.6x its
time), so it is written the way a Spark user would first write it and is NOT optimized along
with the pipeline. Change it only where it breaks the contract. It imports none of the package's
pipeline, transforms or I/O code, only the contract's constants (`reference_inputs.py`).

For a date range and regions: the FX rates from the bundled ECB history, then the landing text
read whole per file and split into numbered lines (bronze), `from_json` and the contract's
checks, a window for duplicates, the FX join (silver), and the daily aggregate (gold); every
table is a Delta table partitioned as the contract says, written with `replaceWhere` over the
range, so a rerun replaces the same partitions. The session is a classic one in this process,
or the warm local Connect server in a smoke run (`classic_spark.start_session`).

Simplification against the contract: Spark decodes the text before it is split, so a line that
is not UTF-8 is found by the replacement character its bad bytes became (`line_bytes` is then
the decoded length); the benchmark's generated input has no such line.

    python -m benchmarks.reference_spark --landing L --warehouse W --start D --end D
        [--regions R,...]
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

T0 = time.perf_counter()

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ISO_TS = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$"


def write(frame: DataFrame, path: str, partition_by: list[str], where: str, run_id: str) -> None:
    (
        frame.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", where)
        .option("userMetadata", run_id)
        .partitionBy(*partition_by)
        .save(path)
    )


def main(argv: list[str] | None = None) -> int:
    from benchmarks.reference_inputs import dates_between, fx_rows, landing_files, parse_args

    args = parse_args(__doc__, argv)

    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from benchmarks.classic_spark import start_session
    from benchmarks.common import emit
    from regional_etl.contract import (
        LONG_LINE_PREFIX_BYTES,
        MAX_AMOUNT,
        MAX_LINE_BYTES,
        REGION_CURRENCY,
    )

    dates = dates_between(args.start, args.end)
    regions: list[str] = args.regions
    run_id = f"reference-spark-{uuid.uuid4()}"
    wh = str(args.warehouse)
    # Not BETWEEN: Delta cannot check a replaceWhere of it against an existing table.
    in_range = f"order_date >= DATE'{dates[0]}' AND order_date <= DATE'{dates[-1]}'"
    region_list = ", ".join(f"'{r}'" for r in regions)
    in_partitions = f"{in_range} AND region IN ({region_list})"
    phases: dict[str, float] = {"imports": round(time.perf_counter() - T0, 3)}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        phases[name] = round(time.perf_counter() - mark, 3)
        mark = time.perf_counter()

    spark: SparkSession = start_session("local[*]", "2g")
    lap("spark_start")

    fx = spark.createDataFrame(
        fx_rows(dates), "order_date date, currency string, usd_per_unit decimal(20,10)"
    )
    write(fx, f"{wh}/reference/fx_rates", ["order_date"], in_range, run_id)
    lap("fx_rates")

    # Read whole so every line keeps its number in its file.
    files = [str(p.absolute()) for p in landing_files(args.landing, dates, regions)]
    text = spark.read.text(files, wholetext=True).select(
        "value",
        F.regexp_extract("_metadata.file_path", r"(region=[^/]+/date=[^/]+/[^/]+)$", 1).alias(
            "source_file"
        ),
    )
    body = F.regexp_replace(F.regexp_replace("value", "^\ufeff", ""), "\n$", "")
    lines = (
        text.where(F.length("value") > 0).select(
            "source_file", F.posexplode(F.split(body, "\n")).alias("pos", "line")
        )
    ).select(
        F.regexp_replace("line", "\r$", "").alias("line"),
        "source_file",
        (F.col("pos") + 1).cast("long").alias("line_number"),
        F.to_date(F.regexp_extract("source_file", r"date=([^/]+)/", 1)).alias("order_date"),
        F.regexp_extract("source_file", r"region=([^/]+)/", 1).alias("region"),
    )
    nbytes = F.octet_length("line")
    defect = F.when(nbytes > MAX_LINE_BYTES, "line_too_long").when(
        F.col("line").contains("\ufffd"), "invalid_encoding"
    )
    prefix = F.regexp_replace(
        F.decode(F.substring(F.encode("line", "UTF-8"), 1, LONG_LINE_PREFIX_BYTES), "UTF-8"),
        "\ufffd+$",
        "",
    )
    bronze = lines.select(
        F.when(defect == "line_too_long", prefix).otherwise(F.col("line")).alias("value"),
        "source_file",
        "line_number",
        F.lit(run_id).alias("run_id"),
        defect.alias("defect"),
        F.when(defect.isNotNull(), nbytes).cast("long").alias("line_bytes"),
        "order_date",
        "region",
    )
    write(bronze, f"{wh}/bronze/raw_orders", ["order_date", "region"], in_partitions, run_id)
    lap("bronze")

    raw = spark.read.format("delta").load(f"{wh}/bronze/raw_orders").where(in_partitions)
    fields = "order_id string, user_id string, amount string, currency string, order_ts string"
    parsed = raw.withColumn(
        "j",
        F.from_json(
            "value",
            f"{fields}, _corrupt_record string",
            {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt_record"},
        ),
    )
    amount = F.trim("j.amount").try_cast("decimal(18,4)")
    ts_text = F.trim("j.order_ts")
    order_ts = F.when(ts_text.rlike(ISO_TS), ts_text.try_cast("timestamp"))
    currency = F.create_map(*[F.lit(x) for kv in REGION_CURRENCY.items() for x in kv])[
        F.col("region")
    ]

    def blank(field: str):
        return F.col(f"j.{field}").isNull() | (F.trim(f"j.{field}") == "")

    reason = (
        F.when(F.col("defect").isNotNull(), F.col("defect"))
        .when(
            ~F.trim(F.coalesce("value", F.lit(""))).startswith("{")
            | F.col("j").isNull()
            | F.col("j._corrupt_record").isNotNull(),
            "malformed",
        )
        .when(blank("order_id"), "missing_order_id")
        .when(blank("user_id"), "missing_user_id")
        .when(amount.isNull() | (amount <= 0) | (amount > MAX_AMOUNT), "invalid_amount")
        .when(F.col("j.currency").isNull() | (F.col("j.currency") != currency), "invalid_currency")
        .when(order_ts.isNull(), "invalid_timestamp")
    )
    checked = parsed.select(
        "*",
        reason.alias("reason"),
        F.trim("j.order_id").alias("order_id"),
        F.trim("j.user_id").alias("user_id"),
        amount.alias("amount"),
        F.col("j.currency").alias("currency"),
        order_ts.alias("order_ts"),
    )
    latest_first = Window.partitionBy("order_date", "region", "order_id").orderBy(
        F.col("order_ts").desc(), F.col("source_file").desc(), F.col("line_number").desc()
    )
    valid = checked.where(F.col("reason").isNull()).withColumn(
        "rank", F.row_number().over(latest_first)
    )
    rates = spark.read.format("delta").load(f"{wh}/reference/fx_rates").where(in_range)
    orders = (
        valid.where("rank = 1")
        .join(rates, ["order_date", "currency"])
        .select(
            "order_id",
            "user_id",
            "amount",
            "currency",
            "order_ts",
            F.col("usd_per_unit").alias("fx_rate"),
            F.round(F.col("amount") * F.col("usd_per_unit"), 2)
            .cast("decimal(18,2)")
            .alias("amount_usd"),
            F.lit(run_id).alias("run_id"),
            "order_date",
            "region",
        )
    )
    write(orders, f"{wh}/silver/orders", ["order_date", "region"], in_partitions, run_id)
    lap("silver_orders")

    def rejected(frame: DataFrame, why) -> DataFrame:
        return frame.select(
            why.alias("reason"),
            F.col("value").alias("raw"),
            "source_file",
            "line_number",
            F.lit(run_id).alias("run_id"),
            "order_date",
            "region",
        )

    quarantine = rejected(checked.where(F.col("reason").isNotNull()), F.col("reason")).union(
        rejected(valid.where("rank > 1"), F.lit("duplicate"))
    )
    path = f"{wh}/silver/orders_quarantine"
    write(quarantine, path, ["order_date", "region"], in_partitions, run_id)
    lap("silver_quarantine")

    silver = spark.read.format("delta").load(f"{wh}/silver/orders").where(in_range)
    revenue = silver.groupBy("order_date", "region").agg(
        F.count(F.lit(1)).alias("orders"),
        F.count_distinct("user_id").alias("users"),
        F.sum("amount_usd").cast("decimal(18,2)").alias("revenue_usd"),
    )
    write(revenue, f"{wh}/gold/daily_revenue", ["order_date"], in_range, run_id)
    lap("gold")
    spark.stop()
    lap("spark_stop")
    emit({"ok": True, "engine": "pyspark", "phases_s": phases, "regions": regions})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
