"""Quality gates: each check on clean and on broken numbers, the one-pass statistics on real
Spark, and partition quarantine across runs on a real instance."""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import io
import json
from decimal import Decimal

import dagster
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
)

from regional_etl.backfill import run_backfill
from regional_etl.checks import (
    ORDERS_GATES,
    QualityGateResource,
    orders_verdicts,
    revenue_verdicts,
    schema_problems,
)
from regional_etl.contract import REGIONS, Table, schema
from regional_etl.generate import generate_landing, write_drop
from regional_etl.io.landing import read_drops, ready_drop
from regional_etl.partitions import DateRegion
from regional_etl.transforms.gates import PartitionStats, gate_stats
from regional_etl.transforms.orders import classify, convert
from regional_etl_tests.conftest import Pipeline

# The tags Dagster puts on a range run of a backfill.
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
GATES = QualityGateResource(min_rows=5, max_rows=100, max_quarantine_ratio=0.2)
CLEAN = PartitionStats(
    lines=50,
    orders=45,
    quarantined=5,
    null_order_id=0,
    null_user_id=0,
    distinct_order_ids=45,
    bad_amounts=0,
    missing_fx=0,
    landing_lines=50,
)


def verdicts(stats: PartitionStats = CLEAN, problems: list[str] | None = None) -> dict:
    return {v.gate.name: v for v in orders_verdicts(stats, problems or [], GATES)}


def test_every_gate_passes_on_clean_numbers() -> None:
    got = verdicts()
    assert set(got) == set(ORDERS_GATES)
    assert all(v.passed for v in got.values())


@pytest.mark.parametrize(
    ("gate", "broken", "metadata"),
    [
        ("ids_not_null", {"null_order_id": 1}, {"null_order_id": 1, "null_user_id": 0}),
        ("ids_not_null", {"null_user_id": 2}, {"null_order_id": 0, "null_user_id": 2}),
        ("order_id_unique", {"distinct_order_ids": 43}, {"duplicate_order_ids": 2}),
        ("volume", {"orders": 4, "distinct_order_ids": 4}, {"orders": 4, "min_rows": 5}),
        ("volume", {"orders": 101, "distinct_order_ids": 101}, {"max_rows": 100}),
        ("amounts_valid", {"bad_amounts": 3}, {"bad_amounts": 3}),
        ("amounts_valid", {"missing_fx": 1}, {"missing_fx_rate": 1}),
        ("reconciliation", {"landing_lines": 51}, {"landing_lines": 51, "unaccounted": 1}),
        ("reconciliation", {"lines": 49}, {"bronze_rows": 49}),
        ("quarantine_ratio", {"quarantined": 11, "orders": 39, "distinct_order_ids": 39}, {}),
    ],
)
def test_each_gate_fails_on_numbers_built_to_break_it(gate, broken, metadata) -> None:
    stats = PartitionStats(**{**CLEAN.__dict__, **broken})
    got = verdicts(stats)
    assert not got[gate].passed
    for key, value in metadata.items():
        assert got[gate].metadata[key] == value
    # Only the intended gate fails (volume also moves when orders move, which is intended).
    others = {n for n, v in got.items() if not v.passed} - {gate, "reconciliation"}
    assert others <= {"volume"} if gate != "volume" else others == set()


def test_severity_volume_reconciliation_schema_block_and_ratio_only_warns() -> None:
    assert ORDERS_GATES["volume"].blocking
    assert ORDERS_GATES["reconciliation"].blocking
    assert ORDERS_GATES["schema"].blocking
    assert not ORDERS_GATES["quarantine_ratio"].blocking
    assert ORDERS_GATES["quarantine_ratio"].severity == AssetCheckSeverity.WARN
    ratio = verdicts(PartitionStats(**{**CLEAN.__dict__, "quarantined": 20}))["quarantine_ratio"]
    assert not ratio.passed and not ratio.blocks


def test_a_drop_that_is_mostly_not_orders_is_blocked_by_the_ratio_gate() -> None:
    """Over block_quarantine_ratio (half by default) the drop is a broken export: the ratio gate
    fails as an error and keeps the partition out of silver, rather than only warning."""
    assert GATES.block_quarantine_ratio == 0.5
    at_half = PartitionStats(**{**CLEAN.__dict__, "orders": 25, "distinct_order_ids": 25,
                                "quarantined": 25})  # fmt: skip
    ratio = verdicts(at_half)["quarantine_ratio"]
    assert not ratio.passed and not ratio.blocks and ratio.severity is None
    garbage = PartitionStats(**{**CLEAN.__dict__, "orders": 10, "distinct_order_ids": 10,
                                "quarantined": 40})  # fmt: skip
    got = verdicts(garbage)
    assert got["quarantine_ratio"].blocks
    assert got["quarantine_ratio"].severity == AssetCheckSeverity.ERROR
    assert got["quarantine_ratio"].metadata["block_quarantine_ratio"].value == 0.5
    assert {n for n, v in got.items() if v.blocks} == {"quarantine_ratio"}


def test_revenue_gates_name_the_missing_regions_and_the_differing_totals() -> None:
    """The gold gates on numbers built to break them: a date without all regions fails
    all_regions_present (and is not judged on totals); a commit that differs from silver fails
    totals_match_orders, naming the region."""
    full = {r: (10, 8, Decimal("100.50")) for r in REGIONS}
    present, totals = revenue_verdicts(full, dict(full))
    assert present.passed and totals.passed
    assert totals.metadata["revenue_usd"] == 402.0

    [missing] = revenue_verdicts({"us-east": full["us-east"]}, None)
    assert not missing.passed and missing.blocks
    assert missing.metadata["missing_regions"].value == ["ap-south", "eu-west", "us-west"]

    _, wrong = revenue_verdicts(full, {**full, "eu-west": (10, 8, Decimal("99.50"))})
    assert not wrong.passed and wrong.blocks
    assert set(wrong.metadata["differences"].value) == {"eu-west"}
    _, short = revenue_verdicts(full, {r: v for r, v in full.items() if r != "ap-south"})
    assert not short.passed


def test_schema_gate_names_the_differences(spark) -> None:
    contract = schema(Table.ORDERS)
    assert schema_problems(contract, contract) == []
    from pyspark.sql import types as T

    drifted = T.StructType(
        [f if f.name != "amount" else T.StructField("amount", T.DoubleType()) for f in contract]
        + [T.StructField("extra", T.StringType())]
    )
    problems = schema_problems(drifted, contract)
    assert "column amount is double, contract says decimal(18,4)" in problems
    assert "unexpected column extra string" in problems
    assert not verdicts(problems=problems)["schema"].passed


def test_gate_stats_one_aggregation_counts_what_the_checks_need(spark) -> None:
    day = dt.date(2024, 3, 8)
    rows = [
        # order_id, user_id, amount, fx_rate, amount_usd, reason
        ("A", "u1", Decimal("10"), Decimal("1"), Decimal("10.00"), None),
        ("A", "u2", Decimal("11"), Decimal("1"), Decimal("11.00"), None),  # duplicate id
        (None, "u3", Decimal("12"), Decimal("1"), Decimal("12.00"), None),  # null id
        ("B", " ", Decimal("13"), Decimal("1"), Decimal("13.00"), None),  # blank user
        ("C", "u5", Decimal("-1"), Decimal("1"), Decimal("-1.00"), None),  # bad amount
        ("D", "u6", Decimal("5"), None, None, None),  # no FX rate
        ("E", None, None, None, None, "malformed"),  # quarantined: not counted as an order
    ]
    frame = spark.createDataFrame(
        [(day, "eu-west", *r) for r in rows],
        "order_date date, region string, order_id string, user_id string, "
        "amount decimal(18,4), fx_rate decimal(20,10), amount_usd decimal(18,2), reason string",
    )
    [stats] = gate_stats(frame).collect()
    assert stats.asDict() == {
        "order_date": day,
        "region": "eu-west",
        "lines": 7,
        "orders": 6,
        "quarantined": 1,
        "null_order_id": 1,
        "null_user_id": 1,
        "distinct_order_ids": 4,
        "bad_amounts": 2,
        "missing_fx": 1,
    }


def test_gate_stats_on_classified_lines_needs_no_shuffle_of_its_own(spark, tmp_path) -> None:
    """The dedup window leaves the lines partitioned by (date, region, order_id), so the gate's
    per-order_id level reuses that partitioning: the only shuffles are the window's and the
    tiny per-partition merge. A second shuffle of every line here would double the gate's cost."""
    day = dt.date(2024, 3, 8)
    generate_landing(tmp_path, day, day, rows=200, seed=5, anomalies=True, regions=["eu-west"])
    drop = ready_drop(tmp_path, DateRegion(day.isoformat(), "eu-west"))
    fx = spark.createDataFrame(
        [(day, currency, Decimal("1.1")) for currency in ("EUR", "USD", "INR")],
        schema(Table.FX_RATES),
    )
    converted = convert(classify(read_drops(spark, tmp_path, [drop])), fx)
    stats = gate_stats(converted)
    # DataFrame.explain() prints the plan the server made; Spark Connect has no other way to it.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        stats.explain(mode="simple")
    plan = printed.getvalue()
    shuffles = [line.strip() for line in plan.splitlines() if "Exchange hashpartitioning" in line]
    assert len(shuffles) == 2, plan
    assert "order_id" in shuffles[1] and "order_id" not in shuffles[0], shuffles
    [row] = stats.collect()
    # And it counts exactly: the same numbers as a textbook count_distinct.
    from pyspark.sql import functions as F

    valid = converted.where(F.col("reason").isNull())
    assert row.orders == valid.count()
    assert row.distinct_order_ids == valid.select("order_id").distinct().count()
    assert row.lines == 200


def _check_results(
    instance: DagsterInstance, asset: str
) -> dict[tuple[str | None, str], list[bool]]:
    """(partition, check) -> pass/fail of every evaluation, oldest first, from the event log."""
    results: dict[tuple[str | None, str], list[bool]] = {}
    for run in reversed(instance.get_runs()):  # get_runs is newest first
        for event in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = event.get_dagster_event().event_specific_data
            assert isinstance(evaluation, AssetCheckEvaluation)
            if evaluation.asset_key.to_user_string() == asset:
                key = (evaluation.partition, evaluation.check_name)
                results.setdefault(key, []).append(evaluation.passed)
    return results


def test_in_one_range_run_a_too_small_partition_blocks_only_its_date_until_fixed(
    pipeline: Pipeline, instance: DagsterInstance, spark
) -> None:
    """The backfill the UI launches: one asset backfill, range runs, and inside the range run
    of a region the partition that fails its blocking gate is the only one held back."""
    start, bad, end = dt.date(2024, 3, 4), "2024-03-06", dt.date(2024, 3, 8)
    generate_landing(pipeline.landing, start, end, rows=40, seed=3)
    # Redeliver 2024-03-06|eu-west with only 3 lines: below the volume floor of 10.
    folder = pipeline.landing / "region=eu-west" / f"date={bad}"
    for f in folder.glob("*.jsonl"):
        f.unlink()
    small = [
        json.dumps(
            {
                "order_id": f"S{n}",
                "user_id": "u",
                "amount": 5,
                "currency": "EUR",
                "order_ts": f"{bad}T10:00:00Z",
            }
        )
        for n in range(3)
    ]
    write_drop(pipeline.landing, bad, "eu-west", small)

    report = run_backfill(pipeline.defs, instance, str(start), str(end))
    status = {k: o.status for k, o in report.outcomes.items()}
    assert status.pop(f"{bad}|eu-west") == "failed"
    assert report.outcomes[f"{bad}|eu-west"].detail == "failed checks: orders:volume"
    assert set(status.values()) == {"succeeded"}

    # Without a daemon, the runs Dagster's asset backfill makes, every one tagged with the
    # backfill (only a daemon records a backfill for the UI's Backfills page): the silver level
    # of the 5 days x 4 regions as one range run per region.
    assert {r.run_id for r in instance.get_runs()} == set(report.runs)
    runs = [instance.get_run_by_id(r) for r in report.runs]
    silver_runs = [r for r in runs if r and AssetKey("orders") in (r.asset_selection or ())]
    assert len(silver_runs) == 4
    eu_west = next(r for r in silver_runs if "eu-west" in r.tags[RANGE_START])
    assert (eu_west.tags[RANGE_START], eu_west.tags[RANGE_END]) == (
        f"{start}|eu-west",
        f"{end}|eu-west",
    )
    assert report.failed_runs == [eu_west.run_id]
    published = instance.fetch_materializations(AssetKey("orders"), limit=100).records
    assert {r.partition_key for r in published if r.run_id == eu_west.run_id} == {
        f"{d}|eu-west" for d in ("2024-03-04", "2024-03-05", "2024-03-07", "2024-03-08")
    }

    checks = _check_results(instance, "orders")
    assert checks[(f"{bad}|eu-west", "volume")][-1] is False
    assert checks[("2024-03-07|eu-west", "volume")][-1] is True
    silver = spark.read.format("delta").load(pipeline.table("silver/orders"))
    assert silver.where(f"order_date = '{bad}' AND region = 'eu-west'").count() == 0
    assert silver.where(f"order_date = '{bad}' AND region = 'us-east'").count() > 0
    quarantine = spark.read.format("delta").load(pipeline.table("silver/orders_quarantine"))
    assert quarantine.where(f"order_date = '{bad}' AND region = 'eu-west'").count() == 0

    good_dates = {"2024-03-04", "2024-03-05", "2024-03-07", "2024-03-08"}
    gold = spark.read.format("delta").load(pipeline.table("gold/daily_revenue"))
    assert {str(r.order_date) for r in gold.select("order_date").distinct().collect()} == (
        good_dates
    )
    assert instance.get_materialized_partitions(AssetKey("daily_revenue")) == good_dates

    # A later daily_revenue run on its own must not pick the blocked region up either.
    later = pipeline.defs.resolve_job_def("daily_revenue_job").execute_in_process(
        instance=instance, partition_key=bad, raise_on_error=False
    )
    assert not later.success
    revenue_checks = _check_results(instance, "daily_revenue")
    assert revenue_checks[(bad, "all_regions_present")][-1] is False

    # Fix the drop, reprocess the region: the date materializes.
    generate_landing(
        pipeline.landing,
        dt.date(2024, 3, 6),
        dt.date(2024, 3, 6),
        rows=40,
        seed=3,
        regions=["eu-west"],
    )
    fixed = run_backfill(pipeline.defs, instance, bad, bad, regions=["eu-west"])
    assert fixed.ok, fixed.outcomes
    gold = spark.read.format("delta").load(pipeline.table("gold/daily_revenue"))
    day = gold.where(f"order_date = '{bad}'").collect()
    assert sorted(r.region for r in day) == sorted(REGIONS)
    assert _check_results(instance, "daily_revenue")[(bad, "totals_match_orders")][-1] is True


def test_per_partition_check_results_still_need_dagster_internals() -> None:
    """`checks.partition_check_results` reaches into Dagster because 1.13 has no public way to
    report a check on one partition of a range run. When this fails, Dagster moved: see whether
    `AssetCheckResult` now takes a partition or the target type is exported, and drop the private
    use; else check that the private names below still mean what that function expects."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )
    from dagster._core.definitions.assets.definition.assets_definition import AssetsDefinition

    assert dagster.__version__ == "1.13.27", "Dagster upgraded: re-check partition_check_results"
    assert "partition" not in inspect.signature(AssetCheckResult).parameters
    assert not hasattr(dagster, "AssetCheckEvaluationTargetMaterializationData")
    assert set(AssetCheckEvaluationTargetMaterializationData.__annotations__) == {
        "storage_id",
        "run_id",
        "timestamp",
    }
    assert hasattr(AssetsDefinition, "get_output_name_for_asset_check_key")
