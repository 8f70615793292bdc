"""The partition schemes, defined once: every asset, job, schedule and sensor imports them here.

Keys of the date x region scheme look like ``2024-03-01|eu-west`` (Dagster orders the two
dimensions by name: ``date`` then ``region``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from regional_etl.contract import REGIONS, validate_date, validate_region

DATE_DIM = "date"
REGION_DIM = "region"

# The first day the pipeline knows about; backfills reach back to here.
START_DATE = os.environ.get("REGIONAL_ETL_START_DATE", "2024-01-01")
# The daily job's own time zone decides what "yesterday" is for the schedule.
TIMEZONE = os.environ.get("REGIONAL_ETL_TIMEZONE", "UTC")

daily_partitions = DailyPartitionsDefinition(start_date=START_DATE, timezone=TIMEZONE)
region_partitions = StaticPartitionsDefinition(list(REGIONS))
date_region_partitions = MultiPartitionsDefinition(
    {DATE_DIM: daily_partitions, REGION_DIM: region_partitions}
)


@dataclass(frozen=True, order=True)
class DateRegion:
    """One landing drop: a (date, region) partition, validated against the contract."""

    order_date: str
    region: str

    def __post_init__(self) -> None:
        validate_date(self.order_date)
        validate_region(self.region)

    @property
    def key(self) -> MultiPartitionKey:
        return MultiPartitionKey({DATE_DIM: self.order_date, REGION_DIM: self.region})

    def __str__(self) -> str:
        return f"{self.order_date}|{self.region}"


def parse_date_region(key: str) -> DateRegion:
    """Parse a ``date|region`` partition key; anything else is a clear error."""
    if isinstance(key, MultiPartitionKey):
        dims = key.keys_by_dimension
        return DateRegion(dims[DATE_DIM], dims[REGION_DIM])
    parts = str(key).split("|")
    if len(parts) != 2:
        raise ValueError(f"invalid partition key {key!r}: expected 'YYYY-MM-DD|<region>'")
    return DateRegion(parts[0], parts[1])


def date_region_keys(dates: Iterable[str], regions: Iterable[str] = REGIONS) -> list[str]:
    regions = list(regions)
    return [str(DateRegion(d, r).key) for d in dates for r in regions]


def run_date_regions(context: AssetExecutionContext) -> list[DateRegion]:
    """The (date, region) partitions of this run: one, or a whole range for a backfill run."""
    return sorted(parse_date_region(k) for k in context.partition_keys)


def run_dates(context: AssetExecutionContext) -> list[str]:
    """The dates of this run, for a daily asset (one, or a range)."""
    return sorted(validate_date(k) for k in context.partition_keys)
