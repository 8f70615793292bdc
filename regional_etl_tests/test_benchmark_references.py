"""The benchmark's reference check (benchmarks/reference_check.py) accepts a reference that keeps
the contract and stops one that does not, naming the table and the partition: a fast reference
that is wrong must not set the bar. Run on the DuckDB reference (real DuckDB, real Parquet, no
Spark); the quick benchmark runs both references through the same check."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks import reference_duckdb
from benchmarks.reference_check import ReferenceMismatch, check_warehouse
from regional_etl.generate import generate_landing

DAY = "2024-03-04"
REGIONS = ["us-east", "eu-west"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The DuckDB reference's warehouse for one day of two regions, anomalies on."""
    root = tmp_path_factory.mktemp("references")
    landing, warehouse = root / "landing", root / "warehouse"
    day = dt.date.fromisoformat(DAY)
    generate_landing(landing, day, day, rows=80, seed=7, anomalies=True, regions=REGIONS)
    argv = ["--landing", str(landing), "--warehouse", str(warehouse), "--start", DAY]
    assert reference_duckdb.main([*argv, "--end", DAY, "--regions", ",".join(REGIONS)]) == 0
    return landing, warehouse


def test_the_check_accepts_a_reference_that_keeps_the_contract(
    reference: tuple[Path, Path],
) -> None:
    landing, warehouse = reference
    compared = check_warehouse("(d)", warehouse, "parquet", landing, [DAY], REGIONS)
    assert compared == {"partitions": 2, "lines": 160}


def test_the_check_names_the_table_and_partition_a_reference_got_wrong(
    reference: tuple[Path, Path],
) -> None:
    landing, warehouse = reference
    [part] = (warehouse / "silver" / "orders" / f"order_date={DAY}" / "region=eu-west").glob(
        "*.parquet"
    )
    table = pq.read_table(part)
    before = table.to_pylist()
    # One order's converted amount off by a cent: the kind of slip a fast rewrite makes.
    wrong = [{**before[0], "amount_usd": before[0]["amount_usd"] + Decimal("0.01")}, *before[1:]]
    try:
        pq.write_table(pa.Table.from_pylist(wrong, schema=table.schema), part)
        with pytest.raises(ReferenceMismatch, match=rf"silver/orders partition {DAY}\|eu-west"):
            check_warehouse("(d)", warehouse, "parquet", landing, [DAY], REGIONS)
    finally:
        pq.write_table(table, part)
