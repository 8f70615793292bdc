"""Bronze lines -> classified orders: parse, validate, deduplicate, convert to USD.

Every bronze row gets exactly one outcome: a valid order, or one quarantine reason (the first
that applies, in `Reason` order). That is what makes `landing lines = orders + quarantine`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from regional_etl.contract import (
    MAX_AMOUNT,
    REGION_CURRENCY,
    USD_SCALE,
    Reason,
    amount_type,
    usd_type,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# ISO-8601 date-time with an explicit offset; Spark's cast accepts more (no offset, spaces),
# so the contract's shape is checked first.
ISO_TS_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$"
CORRUPT = "_corrupt_record"


def _line_schema():
    from pyspark.sql import types as T

    # Everything as string: amount may be a number or a numeric string, and a JSON number read
    # into a string field keeps its literal text, so validation decides, not the parser.
    return T.StructType(
        [
            T.StructField("order_id", T.StringType()),
            T.StructField("user_id", T.StringType()),
            T.StructField("amount", T.StringType()),
            T.StructField("currency", T.StringType()),
            T.StructField("order_ts", T.StringType()),
            T.StructField(CORRUPT, T.StringType()),
        ]
    )


def _region_currency() -> Column:
    from pyspark.sql import functions as F

    pairs = [F.lit(x) for kv in REGION_CURRENCY.items() for x in kv]
    return F.create_map(*pairs)[F.col("region")]


def classify(bronze: DataFrame) -> DataFrame:
    """Parse and validate each bronze line; `reason` is null for a valid, unique order.

    Input columns: value, source_file, line_number, defect, line_bytes, order_date, region (a
    line's `defect`, set when it was read, is its reason: its value is not what was delivered).
    Output adds: order_id, user_id, amount, currency, order_ts, reason.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    parsed = bronze.withColumn(
        "j",
        F.from_json(
            "value",
            _line_schema(),
            {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT},
        ),
    )
    # Only a JSON object is a record; `[..]`, `"x"`, `null` and blank lines are malformed.
    is_object = F.trim(F.coalesce(F.col("value"), F.lit(""))).startswith("{")
    malformed = ~is_object | F.col("j").isNull() | F.col(f"j.{CORRUPT}").isNotNull()

    def present(field: str) -> Column:
        return F.col(f"j.{field}").isNotNull() & (F.trim(F.col(f"j.{field}")) != "")

    amount = F.trim(F.col("j.amount")).try_cast(amount_type())
    amount_ok = amount.isNotNull() & (amount > 0) & (amount <= MAX_AMOUNT)
    ts_raw = F.trim(F.col("j.order_ts"))
    ts = F.when(ts_raw.rlike(ISO_TS_WITH_OFFSET), ts_raw.try_cast("timestamp"))

    reason = (
        F.when(F.col("defect").isNotNull(), F.col("defect"))
        .when(malformed, F.lit(Reason.MALFORMED.value))
        .when(~present("order_id"), F.lit(Reason.MISSING_ORDER_ID.value))
        .when(~present("user_id"), F.lit(Reason.MISSING_USER_ID.value))
        .when(~amount_ok, F.lit(Reason.INVALID_AMOUNT.value))
        .when(
            F.col("j.currency").isNull() | (F.col("j.currency") != _region_currency()),
            F.lit(Reason.INVALID_CURRENCY.value),
        )
        .when(ts.isNull(), F.lit(Reason.INVALID_TIMESTAMP.value))
    )
    checked = parsed.select(
        "value",
        "source_file",
        "line_number",
        "order_date",
        "region",
        F.trim(F.col("j.order_id")).alias("order_id"),
        F.trim(F.col("j.user_id")).alias("user_id"),
        amount.alias("amount"),
        F.col("j.currency").alias("currency"),
        ts.alias("order_ts"),
        reason.alias("reason"),
    )
    # Among valid lines, the same order_id in one (date, region) keeps the latest order_ts;
    # on a tie the last delivered (file name, then line number). Invalid lines do not compete:
    # they sort after the valid ones. The window is on (date, region, order_id) only, so the
    # lines leave it partitioned the way `gate_stats` groups them (no second shuffle).
    latest_first = Window.partitionBy("order_date", "region", "order_id").orderBy(
        F.col("reason").isNull().desc(),
        F.col("order_ts").desc(),
        F.col("source_file").desc(),
        F.col("line_number").desc(),
    )
    rank = F.when(F.col("reason").isNull(), F.row_number().over(latest_first))
    return checked.withColumn(
        "reason",
        F.when(rank > 1, F.lit(Reason.DUPLICATE.value)).otherwise(F.col("reason")),
    )


def convert(classified: DataFrame, fx_rates: DataFrame) -> DataFrame:
    """Add `fx_rate` (USD per unit of the line's currency, on its date) and `amount_usd`
    (half-up to the cent) to every classified line; invalid lines get nulls where they lack input.

    `fx_rates` has order_date, currency, usd_per_unit. The join is a broadcast: one small row per
    currency and date.
    """
    from pyspark.sql import functions as F

    rates = F.broadcast(fx_rates.select("order_date", "currency", "usd_per_unit"))
    joined = classified.join(rates, ["order_date", "currency"], "left")
    return joined.withColumnRenamed("usd_per_unit", "fx_rate").withColumn(
        # Spark's round() on decimals is HALF_UP, as the contract asks.
        "amount_usd",
        F.round(F.col("amount") * F.col("fx_rate"), USD_SCALE).cast(usd_type()),
    )


def valid_orders(converted: DataFrame, run_id: str) -> DataFrame:
    """The rows of `silver/orders`: valid, unique orders of the converted lines."""
    from pyspark.sql import functions as F

    return converted.where(F.col("reason").isNull()).select(
        "order_id",
        "user_id",
        "amount",
        "currency",
        "order_ts",
        "fx_rate",
        "amount_usd",
        F.lit(run_id).alias("run_id"),
        "order_date",
        "region",
    )


def quarantine_rows(classified: DataFrame, run_id: str) -> DataFrame:
    """Every rejected line with its reason, the raw text and where it came from."""
    from pyspark.sql import functions as F

    return classified.where(F.col("reason").isNotNull()).select(
        "reason",
        F.col("value").alias("raw"),
        "source_file",
        "line_number",
        F.lit(run_id).alias("run_id"),
        "order_date",
        "region",
    )
