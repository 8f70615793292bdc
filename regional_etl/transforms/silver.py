"""Bronze lines and FX rates -> the silver tables and the numbers of their quality gates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from regional_etl.transforms.gates import gate_stats
from regional_etl.transforms.orders import classify, convert, quarantine_rows, valid_orders

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


@dataclass(frozen=True)
class SilverFrames:
    """The silver step's frames, all derived from `lines`: cache it before the first action, so
    the gate numbers and both writes read the classified lines once. `lines` carries the run id,
    so its plan, and so its cache entry, is the run's own."""

    lines: DataFrame  # every bronze line, classified and converted, with the run id
    orders: DataFrame  # rows of silver/orders
    quarantine: DataFrame  # rows of silver/orders_quarantine
    gate_stats: DataFrame  # one row of gate numbers per (order_date, region)


def silver_frames(bronze: DataFrame, fx_rates: DataFrame, run_id: str) -> SilverFrames:
    """Classify and convert the bronze lines (value, source_file, line_number, order_date,
    region) with the FX rates of their dates (order_date, currency, usd_per_unit)."""
    from pyspark.sql import functions as F

    # The Spark server's one CacheManager serves every session and matches cached data by plan:
    # without the run id, two runs of the same partitions persist the same plan and share one
    # entry, which either run's unpersist drops for both.
    lines = convert(classify(bronze), fx_rates).withColumn("run_id", F.lit(run_id))
    return SilverFrames(
        lines=lines,
        orders=valid_orders(lines, run_id),
        quarantine=quarantine_rows(lines, run_id),
        gate_stats=gate_stats(lines),
    )
