"""Scenario 2, idempotency by checksum: the same partitions materialized again, by a backfill,
single partitions and one range run as an asset backfill launches it, leave every table with
the same content, no duplicate key, and Delta commits that replace instead of append."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import DagsterInstance

from regional_etl.backfill import run_backfill
from regional_etl.contract import REGIONS
from regional_etl.generate import generate_landing
from regional_etl.io.delta import history
from regional_etl_tests.conftest import Pipeline
from regional_etl_tests.reliability.conftest import TABLES, checksums, judge, table_rows

# Friday to Sunday, weekend rates included: a range of several dates for the backfills and
# range runs, and a date inside it for the single-partition runs (it was a week; nothing here
# needs more).
START, END = dt.date(2024, 3, 8), dt.date(2024, 3, 10)
DATES = [(START + dt.timedelta(days=n)).isoformat() for n in range((END - START).days + 1)]
GOLD = "gold/daily_revenue"
# The tags Dagster's asset backfill daemon puts on the one run of a single-run backfill policy.
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _execute(pipeline: Pipeline, instance: DagsterInstance, job: str, **kwargs) -> None:
    result = pipeline.defs.resolve_job_def(job).execute_in_process(instance=instance, **kwargs)
    assert result.success


@pytest.mark.slow
def test_rerunning_a_range_leaves_identical_checksums(
    pipeline: Pipeline, instance: DagsterInstance, spark
) -> None:
    """The range is first backfilled with one drop still arriving (ap-south on the Saturday: a
    date on either side of it, other regions on its date, a region whose range it splits in
    two). That drop alone is not ready, its date's gold waits, and the same backfill again
    changes nothing. Once it lands, re-running only it completes the date, gold included; from
    there every re-run leaves identical checksums. (This was two tests, each backfilling the
    range twice; the broken-drop one came from test_automation.py.)"""
    generate_landing(pipeline.landing, START, END, rows=25, seed=13, anomalies=True)
    partitions = [(d, r) for d in DATES for r in REGIONS]
    arriving = pipeline.landing / "region=ap-south" / f"date={DATES[1]}" / "_SUCCESS"
    arriving.unlink()

    first = run_backfill(pipeline.defs, instance, DATES[0], DATES[-1], progress=lambda _: None)
    statuses = {k: o.status for k, o in first.outcomes.items()}
    assert statuses.pop(f"{DATES[1]}|ap-south") == "not_ready"
    assert set(statuses.values()) == {"succeeded"} and len(statuses) == 11
    # Pending, not failed: gold of the Saturday is held back rather than launched to fail.
    assert first.failed_runs == [] and not first.failed and first.pending
    assert list(first.held_back) == [DATES[1]]
    assert first.held_back[DATES[1]].startswith("waits for ap-south (landing drop ")
    assert "has no _SUCCESS marker yet" in first.held_back[DATES[1]]
    partial = checksums(spark, pipeline.warehouse)
    gold_dates = {r["order_date"] for r in table_rows(spark, pipeline.warehouse, GOLD)}
    assert gold_dates == {dt.date.fromisoformat(d) for d in (DATES[0], DATES[2])}

    again = run_backfill(pipeline.defs, instance, DATES[0], DATES[-1], progress=lambda _: None)
    assert {k: o.status for k, o in again.outcomes.items()} == {
        k: o.status for k, o in first.outcomes.items()
    }
    changed = [t for t in TABLES if checksums(spark, pipeline.warehouse)[t] != partial[t]]
    assert not changed, f"the same backfill again changed {changed}"

    # The drop lands: re-running only it fills the gap, its date's gold included.
    arriving.touch()
    fixed = run_backfill(
        pipeline.defs, instance, DATES[1], DATES[1], regions=["ap-south"], progress=lambda _: None
    )
    assert fixed.ok and not fixed.held_back, fixed.outcomes
    verdict = judge(spark, pipeline.landing, pipeline.warehouse, partitions)
    assert verdict.ok, verdict.mismatches
    baseline = checksums(spark, pipeline.warehouse)
    runs = len(instance.get_runs())

    steps: dict[str, dict[str, str]] = {}
    _execute(pipeline, instance, "regional_orders_job", partition_key=f"{DATES[2]}|eu-west")
    _execute(pipeline, instance, "fx_rates_job", partition_key=DATES[2])
    _execute(pipeline, instance, "daily_revenue_job", partition_key=DATES[2])
    steps["single partitions"] = checksums(spark, pipeline.warehouse)

    # An asset backfill of the whole range with single-run policies: one run per partition
    # scheme, the date x region one covering all 12 keys from the first to the last.
    # A multi-partition range is the product of its dimensions' ranges, regions in their
    # declared order.
    first, last = f"{DATES[0]}|{REGIONS[0]}", f"{DATES[-1]}|{REGIONS[-1]}"
    for job, first_key, last_key in (
        ("fx_rates_job", DATES[0], DATES[-1]),
        ("regional_orders_job", first, last),
        ("daily_revenue_job", DATES[0], DATES[-1]),
    ):
        _execute(pipeline, instance, job, tags={RANGE_START: first_key, RANGE_END: last_key})
    steps["asset backfill of the range"] = checksums(spark, pipeline.warehouse)

    final = judge(spark, pipeline.landing, pipeline.warehouse, partitions)
    print(f"\n[reliability] idempotency: runs={len(instance.get_runs()) - runs} re-runs after "
          f"{runs} first runs; {final.summary()}")  # fmt: skip
    for step, sums in steps.items():
        changed = [t for t in TABLES if sums[t] != baseline[t]]
        print(f"[reliability] idempotency: {step}: tables changed={changed}")
        assert not changed, step
    assert final.ok, final.mismatches

    # Every data commit replaced its partitions; none appended next to them.
    for name in TABLES:
        commits = history(spark, pipeline.table(name)).collect()
        writes = [c for c in commits if c["operation"] == "WRITE"]
        modes = {c["operationParameters"].get("mode") for c in writes}
        assert modes == {"Overwrite"}, (name, modes)
        assert all(c["operationParameters"].get("predicate") for c in writes), name
