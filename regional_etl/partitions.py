"""The partition schemes, defined once: every asset, job, schedule and sensor imports them here.

Keys of the date x region scheme look like ``2024-03-01|eu-west`` (Dagster orders the two
dimensions by name: ``date`` then ``region``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
)

from regional_etl import settings
from regional_etl.contract import REGIONS, validate_date, validate_region
from regional_etl.settings import Setting

DATE_DIM = "date"
REGION_DIM = "region"


def _with_default(setting: Setting) -> str:
    value = setting.get()
    if value is None:
        raise ValueError(f"{setting.name} has no value and no default")
    return value


# The partition definitions are built on import, so these two settings are read then.
daily_partitions = DailyPartitionsDefinition(
    start_date=_with_default(settings.START_DATE), timezone=_with_default(settings.TIMEZONE)
)
region_partitions = StaticPartitionsDefinition(list(REGIONS))
date_region_partitions = MultiPartitionsDefinition(
    {DATE_DIM: daily_partitions, REGION_DIM: region_partitions}
)

# A (date, region) partition and the daily partition of its date: every region of a date
# converts with that date's FX rates, and a date's revenue needs all the regions of that date.
SAME_DATE = MultiToSingleDimensionPartitionMapping(partition_dimension_name=DATE_DIM)


@dataclass(frozen=True, order=True)
class DateRegion:
    """One landing drop: a (date, region) partition, validated against the contract."""

    order_date: str
    region: str

    def __post_init__(self) -> None:
        validate_date(self.order_date)
        validate_region(self.region)

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


def run_date_regions(context: AssetExecutionContext) -> list[DateRegion]:
    """The (date, region) partitions of this run: one, or a whole range for a backfill run."""
    return sorted(parse_date_region(k) for k in context.partition_keys)


def run_dates(context: AssetExecutionContext) -> list[str]:
    """The dates of this run, for a daily asset (one, or a range)."""
    return sorted(validate_date(k) for k in context.partition_keys)


def date_range(start: str, end: str, names: tuple[str, str] = ("--start", "--end")) -> list[str]:
    """Every date from `start` to `end`, both included; errors name the fields as the caller's
    user typed them (`names`: the CLI's flags by default, a run config's fields in the UI)."""
    first_name, last_name = names
    try:
        first = dt.date.fromisoformat(validate_date(start))
        last = dt.date.fromisoformat(validate_date(end))
    except ValueError as exc:
        raise ValueError(f"{first_name} / {last_name}: {exc}") from None
    if last < first:
        raise ValueError(f"{last_name} {end} is before {first_name} {start}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
