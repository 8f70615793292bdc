"""Scenario 1, exactly once, executed: the landing sensor ticked on a real instance and every
run it requests actually executed on that instance (as the daemon would launch it), through new
drops, a redelivery, an out-of-order earlier date, a re-touched `_SUCCESS` and a sensor whose
cursor was lost. After each step the raw_orders materializations per partition equal the
deliveries, the tables equal the oracle, and gold follows through the automation condition."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from dagster import DagsterInstance

from regional_etl.contract import REGIONS
from regional_etl.generate import generate_landing, write_drop
from regional_etl_tests.conftest import Pipeline
from regional_etl_tests.reliability.conftest import Driver, judge, materializations

LATE_LINE = (
    '{"order_id": "late-1", "user_id": "u-late", "amount": "12.50", "currency": "EUR", '
    '"order_ts": "2024-03-07T23:59:00+01:00"}'
)


@pytest.mark.slow
def test_every_delivery_is_ingested_exactly_once_and_gold_follows(
    pipeline: Pipeline, instance: DagsterInstance, spark
) -> None:
    driver = Driver(pipeline, instance)
    deliveries: Counter[str] = Counter()
    gold_expected: Counter[str] = Counter()
    dates = ["2024-03-07"]
    rows: list[str] = []

    def check(step: str) -> None:
        driver.settle()
        partitions = [(d, r) for d in dates for r in REGIONS]
        verdict = judge(spark, pipeline.landing, pipeline.warehouse, partitions)
        ingested = materializations(instance, "raw_orders")
        gold = materializations(instance, "daily_revenue")
        rows.append(
            f"[reliability] exactly-once: {step}: runs={sum(driver.launched.values())} "
            f"deliveries={sum(deliveries.values())} raw_orders_materializations="
            f"{sum(ingested.values())} gold_materializations={sum(gold.values())} "
            f"run_keys_deduplicated={driver.deduplicated} {verdict.summary()}"
        )
        print(rows[-1])
        assert ingested == deliveries, step
        assert gold == gold_expected, step
        assert verdict.ok, (step, verdict.mismatches)

    # A day of drops, four regions.
    generate_landing(pipeline.landing, dt.date(2024, 3, 7), dt.date(2024, 3, 7), rows=20, seed=3)
    deliveries.update(f"{d}|{r}" for d in dates for r in REGIONS)
    gold_expected.update(dates)
    check("new drops")

    # A redelivery of an old drop: one more file, marker touched again.
    write_drop(pipeline.landing, "2024-03-07", "eu-west", [LATE_LINE], file_name="late.jsonl")
    deliveries["2024-03-07|eu-west"] += 1
    gold_expected["2024-03-07"] += 1
    check("redelivery of one old drop")

    # An earlier date arrives after the later ones.
    generate_landing(pipeline.landing, dt.date(2024, 3, 1), dt.date(2024, 3, 1), rows=20, seed=4)
    dates.insert(0, "2024-03-01")
    deliveries.update(f"2024-03-01|{r}" for r in REGIONS)
    gold_expected["2024-03-01"] += 1
    check("out-of-order earlier date")

    # The marker re-touched, no new file: by contract a redelivery, ingested once more, and
    # (the content being the same) every table stays as it was.
    # `touch`: the marker's time becomes now, later than the drop's last ingestion.
    (pipeline.landing / "region=us-west" / "date=2024-03-07" / "_SUCCESS").touch()
    deliveries["2024-03-07|us-west"] += 1
    gold_expected["2024-03-07"] += 1
    check("re-touched _SUCCESS, no new file")

    # The sensor restarts with its cursor lost: nothing is ingested again.
    driver.cursor = None
    check("sensor restarted, cursor lost")
    assert driver.deduplicated == 0, "the sensor itself must not ask twice"
