"""A drop that cannot be read fails only its own partition, also inside a range run: the asset
backfill that the UI's "Materialize all" and `regional-etl backfill` launch over two dates, one
of whose eight drops has a file that cannot be read. The other seven are published and equal
the oracle, gold of the complete date is written, and the instance (what the UI's partition
status shows) has exactly the broken partition as failed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from dagster import AssetKey, AssetPartitionStatus, DagsterInstance

from regional_etl.backfill import Status, run_backfill
from regional_etl.contract import REGIONS
from regional_etl.generate import generate_landing
from regional_etl.partitions import date_region_partitions
from regional_etl_tests import oracle
from regional_etl_tests.conftest import Pipeline

FIRST, SECOND = "2024-03-04", "2024-03-05"
BROKEN = f"{SECOND}|eu-west"


@pytest.mark.slow
def test_a_broken_drop_in_a_two_date_range_fails_alone(
    pipeline: Pipeline, instance: DagsterInstance, spark: Any
) -> None:
    generate_landing(
        pipeline.landing, dt.date.fromisoformat(FIRST), dt.date.fromisoformat(SECOND), rows=40
    )
    folder = pipeline.landing / "region=eu-west" / f"date={SECOND}"
    (folder / "gone.jsonl").symlink_to(pipeline.landing / "nowhere.jsonl")  # dangling

    report = run_backfill(pipeline.defs, instance, FIRST, SECOND)

    statuses = {k: o.status for k, o in report.outcomes.items()}
    assert statuses.pop(BROKEN) == Status.FAILED
    assert statuses == {f"{d}|{r}": Status.SUCCEEDED for d in (FIRST, SECOND) for r in REGIONS
                        if f"{d}|{r}" != BROKEN}  # fmt: skip
    detail = report.outcomes[BROKEN].detail
    assert f"region=eu-west/date={SECOND}/gone.jsonl could not be read" in detail, detail

    # The seven good partitions, row by row as the contract says; gold of the complete date.
    oracle.assert_warehouse_matches(spark, pipeline.warehouse, pipeline.landing, [FIRST], REGIONS)
    published = [r for r in REGIONS if r != "eu-west"]
    for region in published:
        want = oracle.expected_partition(pipeline.landing, SECOND, region)
        where = f"order_date = '{SECOND}' AND region = '{region}'"
        bronze = spark.read.format("delta").load(pipeline.table("bronze/raw_orders"))
        orders = spark.read.format("delta").load(pipeline.table("silver/orders"))
        assert bronze.where(where).count() == want.lines
        assert {r["order_id"] for r in orders.where(where).collect()} == set(want.orders)
    gold = spark.read.format("delta").load(pipeline.table("gold/daily_revenue"))
    assert {str(r["order_date"]) for r in gold.collect()} == {FIRST}

    # What the partitions page shows: only the broken drop failed.
    keys = [f"{d}|{r}" for d in (FIRST, SECOND) for r in REGIONS]
    status = instance.get_status_by_partition(AssetKey("raw_orders"), keys, date_region_partitions)
    assert status is not None
    assert {k for k, s in status.items() if s == AssetPartitionStatus.FAILED} == {BROKEN}
    assert {k for k, s in status.items() if s == AssetPartitionStatus.MATERIALIZED} == (
        set(keys) - {BROKEN}
    )
