"""The data contract: regions, currencies, landing layout, table schemas and rejection reasons.

Every other module (and the README) takes these names from here; changing one is a contract
change that downstream consumers of the warehouse will notice.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyspark is imported lazily so that importing the contract stays cheap
    from pyspark.sql.types import DecimalType, StructType

REGION_CURRENCY: dict[str, str] = {
    "us-east": "USD",
    "us-west": "USD",
    "eu-west": "EUR",
    "ap-south": "INR",
}
REGIONS: tuple[str, ...] = tuple(REGION_CURRENCY)
CURRENCIES: tuple[str, ...] = tuple(sorted(set(REGION_CURRENCY.values())))

# Inclusive bounds on a valid order amount, in the region's local currency.
MAX_AMOUNT = 1_000_000
SUCCESS_MARKER = "_SUCCESS"
# A landing line longer than this is not an order (a runaway export, a file without line
# breaks): it is quarantined as `line_too_long`, and bronze keeps only its first
# LONG_LINE_PREFIX_BYTES (cut on a character boundary) with its full length in `line_bytes`.
MAX_LINE_BYTES = 1024 * 1024
LONG_LINE_PREFIX_BYTES = 1024
LANDING_SUFFIX = ".jsonl"

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Reason(StrEnum):
    """Why a landing line was rejected into `silver/orders_quarantine`, in precedence order."""

    LINE_TOO_LONG = "line_too_long"
    INVALID_ENCODING = "invalid_encoding"
    MALFORMED = "malformed"
    MISSING_ORDER_ID = "missing_order_id"
    MISSING_USER_ID = "missing_user_id"
    INVALID_AMOUNT = "invalid_amount"
    INVALID_CURRENCY = "invalid_currency"
    INVALID_TIMESTAMP = "invalid_timestamp"
    DUPLICATE = "duplicate"


# The reasons found while reading a line's bytes, before it is parsed: bronze records them in
# its `defect` column, so silver can be rebuilt from bronze alone.
LINE_DEFECTS = (Reason.LINE_TOO_LONG, Reason.INVALID_ENCODING)


class Table(StrEnum):
    """Warehouse tables, as paths relative to the warehouse root."""

    RAW_ORDERS = "bronze/raw_orders"
    ORDERS = "silver/orders"
    ORDERS_QUARANTINE = "silver/orders_quarantine"
    DAILY_REVENUE = "gold/daily_revenue"
    FX_RATES = "reference/fx_rates"


REGIONAL_PARTITION_COLUMNS = ("order_date", "region")
DAILY_PARTITION_COLUMNS = ("order_date",)


class ContractError(ValueError):
    """Input that breaks the data contract (a bad region, date or landing path)."""


def validate_region(region: str) -> str:
    if region not in REGION_CURRENCY:
        raise ContractError(f"unknown region {region!r}: expected one of {', '.join(REGIONS)}")
    return region


def validate_date(value: str) -> str:
    """Accept only a real calendar date in YYYY-MM-DD form (no paths, no times)."""
    import datetime as dt

    if not _DATE_RE.match(value):
        raise ContractError(f"invalid date {value!r}: expected YYYY-MM-DD")
    try:
        dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ContractError(f"invalid date {value!r}: {exc}") from exc
    return value


def drop_path(landing_root: str | Path, order_date: str, region: str) -> Path:
    """The landing folder of one drop."""
    return (
        Path(landing_root)
        / f"region={validate_region(region)}"
        / f"date={validate_date(order_date)}"
    )


def schema(table: Table) -> StructType:
    """The Spark schema of a warehouse table, partition columns included."""
    from pyspark.sql import types as T

    partition = [T.StructField("order_date", T.DateType(), False)]
    regional = [*partition, T.StructField("region", T.StringType(), False)]
    fields: dict[Table, list[T.StructField]] = {
        Table.RAW_ORDERS: [
            T.StructField("value", T.StringType(), True),
            T.StructField("source_file", T.StringType(), False),
            T.StructField("line_number", T.LongType(), False),
            T.StructField("run_id", T.StringType(), False),
            # Set only where `value` is not the line as delivered: the line's defect (a
            # LINE_DEFECTS reason) and its length in bytes as delivered.
            T.StructField("defect", T.StringType(), True),
            T.StructField("line_bytes", T.LongType(), True),
            *regional,
        ],
        Table.ORDERS: [
            T.StructField("order_id", T.StringType(), False),
            T.StructField("user_id", T.StringType(), False),
            T.StructField("amount", amount_type(), False),
            T.StructField("currency", T.StringType(), False),
            T.StructField("order_ts", T.TimestampType(), False),
            T.StructField("fx_rate", fx_rate_type(), False),
            T.StructField("amount_usd", usd_type(), False),
            T.StructField("run_id", T.StringType(), False),
            *regional,
        ],
        Table.ORDERS_QUARANTINE: [
            T.StructField("reason", T.StringType(), False),
            T.StructField("raw", T.StringType(), True),
            T.StructField("source_file", T.StringType(), False),
            T.StructField("line_number", T.LongType(), False),
            T.StructField("run_id", T.StringType(), False),
            *regional,
        ],
        Table.DAILY_REVENUE: [
            *regional,
            T.StructField("orders", T.LongType(), False),
            T.StructField("users", T.LongType(), False),
            T.StructField("revenue_usd", usd_type(), False),
        ],
        Table.FX_RATES: [
            *partition,
            T.StructField("currency", T.StringType(), False),
            T.StructField("usd_per_unit", fx_rate_type(), False),
        ],
    }
    return T.StructType(fields[table])


def partition_columns(table: Table) -> tuple[str, ...]:
    if table in (Table.DAILY_REVENUE, Table.FX_RATES):
        return DAILY_PARTITION_COLUMNS
    return REGIONAL_PARTITION_COLUMNS


# Decimal precisions: local amounts keep 4 places (some currencies quote sub-cent prices),
# FX rates 10 places (USD per INR is ~0.012), USD amounts are cents.
AMOUNT_PRECISION, AMOUNT_SCALE = 18, 4
FX_PRECISION, FX_SCALE = 20, 10
USD_PRECISION, USD_SCALE = 18, 2


def _decimal(precision: int, scale: int) -> DecimalType:
    from pyspark.sql.types import DecimalType

    return DecimalType(precision, scale)


def amount_type() -> DecimalType:
    return _decimal(AMOUNT_PRECISION, AMOUNT_SCALE)


def fx_rate_type() -> DecimalType:
    return _decimal(FX_PRECISION, FX_SCALE)


def usd_type() -> DecimalType:
    return _decimal(USD_PRECISION, USD_SCALE)
