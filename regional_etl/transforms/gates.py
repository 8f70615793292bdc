"""Quality-gate statistics: every number the gates need, per partition, in one aggregation.

`gate_stats` runs one Spark job over the converted lines of a run (one or many partitions):
one pass over the rows, no scan per column or per check. The verdicts are then plain Python
over the collected rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def gate_stats(converted: DataFrame) -> DataFrame:
    """One row per (order_date, region): line, order and quarantine counts, nulls, duplicates,
    bad amounts and missing FX among the orders that would be published.

    Uniqueness is counted in two levels (per order_id, then per partition) instead of with
    `count_distinct`, which Spark plans as an Expand that doubles the rows and shuffles them.
    `classify` leaves the lines hash-partitioned by (order_date, region, order_id) for its
    deduplication window, so the per-order_id level needs no shuffle: the gate stays one pass
    over the rows. On differently partitioned input Spark adds the shuffle and the numbers
    stay exact.
    """
    from pyspark.sql import functions as F

    valid = F.col("reason").isNull()

    def count_if(cond: Any) -> Any:
        return F.sum(F.when(cond, 1).otherwise(0)).cast("long")

    def blank(name: str) -> Any:
        return F.col(name).isNull() | (F.trim(F.col(name)) == "")

    per_id = converted.groupBy("order_date", "region", "order_id").agg(
        F.count(F.lit(1)).alias("lines"),
        count_if(valid).alias("orders"),
        count_if(~valid).alias("quarantined"),
        count_if(valid & blank("order_id")).alias("null_order_id"),
        count_if(valid & blank("user_id")).alias("null_user_id"),
        count_if(
            valid
            & (F.col("amount").isNull() | (F.col("amount") <= 0) | F.col("amount_usd").isNull())
        ).alias("bad_amounts"),
        count_if(valid & F.col("fx_rate").isNull()).alias("missing_fx"),
    )
    summed = ["lines", "orders", "quarantined", "null_order_id", "null_user_id"]
    return per_id.groupBy("order_date", "region").agg(
        *[F.sum(name).cast("long").alias(name) for name in summed],
        # An id is distinct once however many valid lines carry it; null ids do not count.
        count_if((F.col("orders") > 0) & F.col("order_id").isNotNull()).alias("distinct_order_ids"),
        *[F.sum(name).cast("long").alias(name) for name in ("bad_amounts", "missing_fx")],
    )


@dataclass(frozen=True)
class PartitionStats:
    """The collected gate statistics of one partition, plus counts measured outside Spark."""

    lines: int
    orders: int
    quarantined: int
    null_order_id: int
    null_user_id: int
    distinct_order_ids: int
    bad_amounts: int
    missing_fx: int
    landing_lines: int

    @property
    def duplicate_order_ids(self) -> int:
        return self.orders - self.distinct_order_ids

    @property
    def quarantine_ratio(self) -> float:
        return self.quarantined / self.landing_lines if self.landing_lines else 0.0

    @classmethod
    def empty(cls, landing_lines: int) -> PartitionStats:
        return cls(0, 0, 0, 0, 0, 0, 0, 0, landing_lines)
