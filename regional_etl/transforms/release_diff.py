"""A release's data diff as pure DataFrame functions: one table's rows in two namespaces, and the
revenue of two `gold/daily_revenue` frames. `regional_etl.release.diff` reads the tables and
calls these; tests call them on frames of their own."""

from __future__ import annotations

from functools import reduce
from typing import TYPE_CHECKING

from regional_etl.contract import Table, partition_columns, schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# Row identity of each table inside its partition; every other column except `run_id` (which
# differs on every run by design) is compared.
DIFF_KEYS: dict[Table, tuple[str, ...]] = {
    Table.RAW_ORDERS: ("source_file", "line_number"),
    Table.ORDERS: ("order_id",),
    Table.ORDERS_QUARANTINE: ("source_file", "line_number"),
    Table.DAILY_REVENUE: ("region",),
    Table.FX_RATES: ("currency",),
}
NOT_COMPARED = {"run_id"}


def table_diff(live: DataFrame, candidate: DataFrame, table: Table) -> DataFrame:
    """Per (order_date, region) of a table: rows on each side, keys only in the live slot, only
    in the release, keys in both whose values differ, and `changed_columns` (column -> such
    keys).
    Region is null for the tables without one (fx_rates). The same columns for every table, so
    the diffs of all tables are one union and one Spark job."""
    from pyspark.sql import functions as F

    keys = [*partition_columns(table), *DIFF_KEYS[table]]
    values = [f.name for f in schema(table).fields if f.name not in {*keys, *NOT_COMPARED}]

    def side(df: DataFrame, tag: str) -> DataFrame:
        return df.select(
            *keys, *[F.col(v).alias(f"{tag}_{v}") for v in values], F.lit(True).alias(f"in_{tag}")
        )

    joined = side(live, "b").join(side(candidate, "g"), on=keys, how="full_outer")
    in_b, in_g = F.col("in_b").isNotNull(), F.col("in_g").isNotNull()
    differs = {v: in_b & in_g & ~F.col(f"b_{v}").eqNullSafe(F.col(f"g_{v}")) for v in values}
    any_differs = reduce(lambda a, b: a | b, differs.values(), F.lit(False))
    region = F.col("region") if "region" in keys else F.lit(None).cast("string")
    return joined.groupBy("order_date", region.alias("region")).agg(
        F.lit(table.value).alias("table"),
        F.count_if(in_b).alias("live_rows"),
        F.count_if(in_g).alias("release_rows"),
        F.count_if(in_b & ~in_g).alias("only_live"),
        F.count_if(in_g & ~in_b).alias("only_release"),
        F.count_if(any_differs).alias("changed"),
        F.create_map(*[x for v, c in differs.items() for x in (F.lit(v), F.count_if(c))]).alias(
            "changed_columns"
        ),
    )


def revenue_diff(live: DataFrame, candidate: DataFrame) -> DataFrame:
    """Revenue per (order_date, region) of two `gold/daily_revenue` frames, live and release,
    and release - live."""
    from pyspark.sql import functions as F

    def side(df: DataFrame, name: str) -> DataFrame:
        return df.select("order_date", "region", F.col("revenue_usd").alias(name))

    joined = side(live, "live_usd").join(
        side(candidate, "release_usd"), on=["order_date", "region"], how="full_outer"
    )
    zero = F.lit(0).cast("decimal(18,2)")
    return joined.select(
        "order_date",
        "region",
        F.coalesce("live_usd", zero).alias("live_usd"),
        F.coalesce("release_usd", zero).alias("release_usd"),
        (F.coalesce("release_usd", zero) - F.coalesce("live_usd", zero)).alias("diff_usd"),
    )
