"""The one check of both references' output: every table, partition by partition, against what
the tests' oracle (`regional_etl_tests/oracle.py`) computes from the landing files and the raw
ECB CSV. A reference that is fast because it is wrong must not set the bar, so the benchmark
runs this after every reference run, quick mode included, and stops on the first mismatch.

Read without Spark: Delta with delta-rs (`deltalake`), Parquet with pyarrow, as other engines
would read the warehouse.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds

from regional_etl.contract import Table
from regional_etl_tests.oracle import ecb_usd_per_unit, expected_partition, landing_lines


class ReferenceMismatch(AssertionError):
    """A reference's table differs from the oracle's expectation; says which table and
    partition."""


def _dataset(warehouse: Path, table: Table, storage: str) -> ds.Dataset:
    path = warehouse / table.value
    if storage == "delta":
        from deltalake import DeltaTable

        return DeltaTable(str(path)).to_pyarrow_dataset()
    import pyarrow as pa

    regional = table not in (Table.FX_RATES, Table.DAILY_REVENUE)
    fields = [("order_date", pa.date32()), *([("region", pa.string())] if regional else [])]
    return ds.dataset(
        path, format="parquet", partitioning=ds.partitioning(pa.schema(fields), flavor="hive")
    )


def _rows(data: ds.Dataset, day: dt.date, region: str | None = None) -> list[dict[str, Any]]:
    where = pc.field("order_date") == pc.scalar(day)
    if region is not None:
        where = where & (pc.field("region") == region)
    return data.to_table(filter=where).to_pylist()


def _utc(ts: dt.datetime) -> dt.datetime:
    """A naive UTC datetime, as the oracle holds it (delta-rs reads Spark's timestamps as UTC)."""
    return ts.astimezone(dt.UTC).replace(tzinfo=None) if ts.tzinfo else ts


def check_warehouse(
    name: str,
    warehouse: Path,
    storage: str,
    landing: Path,
    dates: Sequence[str],
    regions: Sequence[str],
) -> dict[str, int]:
    """Raise `ReferenceMismatch` naming the table and partition where `name`'s output (`storage`
    "delta" or "parquet") differs from the contract's; return what was compared."""

    def fail(table: Table, partition: str, what: str) -> None:
        raise ReferenceMismatch(f"{name}: {table.value} partition {partition}: {what}")

    tables = {t: _dataset(warehouse, t, storage) for t in Table}
    compared: Counter[str] = Counter()
    for date in dates:
        day = dt.date.fromisoformat(date)
        got_fx = {r["currency"]: r["usd_per_unit"] for r in _rows(tables[Table.FX_RATES], day)}
        want_fx = ecb_usd_per_unit(day)
        if got_fx != want_fx:
            fail(Table.FX_RATES, date, f"{got_fx} != expected {want_fx}")
        revenue = {r["region"]: r for r in _rows(tables[Table.DAILY_REVENUE], day)}
        for region in regions:
            partition = f"{date}|{region}"
            want = expected_partition(landing, date, region)
            # Bronze holds every line as delivered; a line with a defect holds its reason.
            want_bronze = {
                (ln.source_file, ln.line_number): ln.defect or ln.raw
                for ln in landing_lines(landing, date, region)
            }
            got_bronze = {
                (r["source_file"], r["line_number"]): r["defect"] or r["value"]
                for r in _rows(tables[Table.RAW_ORDERS], day, region)
            }
            if got_bronze != want_bronze:
                diff = set(got_bronze.items()) ^ set(want_bronze.items())
                fail(Table.RAW_ORDERS, partition, f"{len(diff)} lines differ, e.g. {min(diff)}")
            orders = _rows(tables[Table.ORDERS], day, region)
            got_orders = {
                r["order_id"]: (
                    r["user_id"],
                    r["amount"],
                    r["currency"],
                    _utc(r["order_ts"]),
                    r["fx_rate"],
                    r["amount_usd"],
                )
                for r in orders
            }
            if len(got_orders) != len(orders):
                fail(Table.ORDERS, partition, "order_id not unique")
            if got_orders != want.orders:
                diff = set(got_orders.items()) ^ set(want.orders.items())
                fail(Table.ORDERS, partition, f"{len(diff)} rows differ, e.g. {min(diff)}")
            got_q = {
                (r["source_file"], r["line_number"]): r["reason"]
                for r in _rows(tables[Table.ORDERS_QUARANTINE], day, region)
            }
            if got_q != want.quarantine:
                diff = set(got_q.items()) ^ set(want.quarantine.items())
                fail(Table.ORDERS_QUARANTINE, partition, f"{len(diff)} differ, e.g. {min(diff)}")
            got_rev = revenue.get(region)
            want_rev = {
                "orders": len(want.orders),
                "users": len({o[0] for o in want.orders.values()}),
                "revenue_usd": sum((o[5] for o in want.orders.values()), Decimal(0)),
            }
            if got_rev is None or {k: got_rev[k] for k in want_rev} != want_rev:
                fail(Table.DAILY_REVENUE, partition, f"{got_rev} != expected {want_rev}")
            compared["partitions"] += 1
            compared["lines"] += want.lines
    return dict(compared)
