"""Silver orders -> gold daily revenue: one row per (date, region)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from regional_etl.contract import usd_type

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def daily_revenue(orders: DataFrame) -> DataFrame:
    """Orders, distinct users and USD revenue per order_date and region."""
    from pyspark.sql import functions as F

    return orders.groupBy("order_date", "region").agg(
        F.count(F.lit(1)).alias("orders"),
        F.count_distinct("user_id").alias("users"),
        F.sum("amount_usd").cast(usd_type()).alias("revenue_usd"),
    )
