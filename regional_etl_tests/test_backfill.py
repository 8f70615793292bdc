"""The backfill front end's use of Dagster internals, checked without Spark: it fails loudly on a
Dagster upgrade that moves them; and its summary, from real runs of a stand-in `orders` asset.
The behaviour itself (range runs, a blocked date, the daemon executing a backfill the command
submitted) is tested in test_gates.py and test_e2e.py."""

from __future__ import annotations

import pytest
from dagster import (
    DagsterInstance,
    Failure,
    MaterializeResult,
    asset,
    materialize,
)

from regional_etl import backfill
from regional_etl.checks import ORDERS_GATES, Verdict, partition_check_results
from regional_etl.partitions import DateRegion, date_region_partitions
from regional_etl_tests.conftest import Pipeline


def test_an_in_process_workspace_serves_the_backfill_graphql(
    pipeline: Pipeline, instance: DagsterInstance
) -> None:
    """Dagster has no public API to submit or drive an asset backfill without a webserver; when
    this fails, look for one (or for where the workspace, instance-ref and daemon-iteration
    internals moved) before patching `regional_etl/backfill.py`."""
    from dagster._daemon.backfill import execute_backfill_jobs  # noqa: F401  (moved = loud)

    ready = [DateRegion("2024-03-04", "eu-west")]
    params = backfill.backfill_params(pipeline.defs, ready, "guard")
    assert {tuple(s["assetKey"]["path"]) for s in params["partitionsByAssets"]} == {
        ("fx_rates",),
        ("raw_orders",),
        ("orders",),
        ("orders_quarantine",),
        ("daily_revenue",),
    }
    # Gold of a date held back (a drop of it not ready) stays out; its FX rates do not.
    held = backfill.backfill_params(pipeline.defs, ready, "guard", held_back={"2024-03-04"})
    assert {tuple(s["assetKey"]["path"]) for s in held["partitionsByAssets"]} == {
        ("fx_rates",),
        ("raw_orders",),
        ("orders",),
        ("orders_quarantine",),
    }
    assert not backfill.daemon_running(instance)
    with backfill._workspace(pipeline.defs, instance, in_process=True) as workspace:
        with pytest.raises(RuntimeError, match="no-such-backfill"):
            backfill._progress(workspace, "no-such-backfill")
        # Submitted exactly as the UI submits it, it is an asset backfill on the instance.
        backfill_id = backfill._launch(workspace, pipeline.defs, ready, "guard")
        assert backfill._progress(workspace, backfill_id).total == 1
    submitted = instance.get_backfill(backfill_id)
    assert submitted is not None and submitted.is_asset_backfill
    assert submitted.title == "guard"


GATES = [ORDERS_GATES["ids_not_null"], ORDERS_GATES["quarantine_ratio"]]
LONG_REASON = (
    "landing file region=us-west/date=2024-03-04/part-00000.jsonl cannot be read: "
    + " ".join(f"word{i}" for i in range(40))
    + " /srv/landing/region=us-west/date=2024-03-04/a-very-long-file-name-without-any-spaces.jsonl"
)


@asset(
    name="orders",
    partitions_def=date_region_partitions,
    output_required=False,
    check_specs=[g.spec("orders", date_region_partitions) for g in GATES],
)
def stand_in_orders(context):
    """eu-west publishes with a WARN check failed; us-east fails its ERROR and its WARN check;
    us-west fails with a long error and no failed check."""
    key = context.partition_key
    region = key.split("|")[1]
    if region == "us-west":
        raise Failure(description=f"{LONG_REASON}\nsecond line")
    publish = region == "eu-west"
    if publish:
        yield MaterializeResult()
    verdicts = [Verdict(GATES[0], publish, {}), Verdict(GATES[1], False, {})]
    yield from partition_check_results(context, "orders", {key: verdicts})
    if not publish:
        raise Failure(description="orders not published: a blocking gate failed")


def test_the_summary_tells_warnings_from_failures_and_keeps_every_reason_whole(
    instance: DagsterInstance,
) -> None:
    ready = [DateRegion("2024-03-04", r) for r in ("eu-west", "us-east", "us-west")]
    for p in ready:
        materialize(
            [stand_in_orders],
            partition_key=str(p),
            instance=instance,
            tags={backfill.BACKFILL_ID_TAG: "b1"},
            raise_on_error=False,
        )
    report = backfill._report(instance, "b1", ready, backfill.ORDERS)
    eu, us_east, us_west = (report.outcomes[str(p)] for p in ready)
    # A WARN check is a warning: the partition that published succeeded.
    assert (eu.status, eu.detail, eu.warnings) == (
        "succeeded",
        "",
        ["orders:quarantine_ratio"],
    )
    assert us_east.status == "failed" and us_east.detail == "failed checks: orders:ids_not_null"
    assert us_east.warnings == ["orders:quarantine_ratio"]
    # No check explains us-west: its run's error, the first line whole.
    assert us_west.status == "failed" and LONG_REASON in us_west.detail
    assert "second line" not in us_west.detail

    text = backfill.format_report(report)
    assert "2024-03-04|eu-west     succeeded  warnings: orders:quarantine_ratio" in text
    assert "warnings: orders:quarantine_ratio" in text.split("us-east")[1]
    # Wrapped at words under the detail column, nothing cut: the reason reads whole again.
    assert " ".join(LONG_REASON.split()) in " ".join(text.split())
    for line in text.splitlines():
        assert len(line) <= backfill.REPORT_WIDTH or " " not in line.strip(), line
    assert "3 partitions: 1 succeeded, 2 failed" in text
    assert report.failed and not report.pending and not report.ok


def test_a_held_back_date_is_pending_and_printed_whole() -> None:
    why = "landing drop /srv/landing/region=eu-west/date=2024-03-02 for partition " + (
        "2024-03-02|eu-west has no _SUCCESS marker yet: not ingesting a drop that may be incomplete"
    )
    report = backfill.BackfillReport(
        "b2",
        "COMPLETED_SUCCESS",
        outcomes={
            "2024-03-02|us-east": backfill.PartitionOutcome(
                "2024-03-02|us-east", backfill.Status.SUCCEEDED
            )
        },
        held_back={"2024-03-02": f"waits for eu-west ({why})"},
    )
    assert report.pending and not report.failed and not report.ok
    text = backfill.format_report(report)
    assert "held back: 2024-03-02 waits for eu-west (landing drop" in text
    assert f"waits for eu-west ({why})" in " ".join(text.split())
