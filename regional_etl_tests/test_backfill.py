"""The backfill front end without Spark: the backfill it hands to a daemon, submitted as the UI
submits it (in-process and to a real webserver); and its summary, from real runs of a stand-in
`orders` asset. The behaviour itself (range runs, a blocked date, the daemon executing a
backfill the command submitted) is tested in test_gates.py and test_e2e.py; the private Dagster
APIs it needs in test_dagster_private.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Failure,
    MaterializeResult,
    asset,
    materialize,
)

from regional_etl import backfill
from regional_etl.backfill import daemon
from regional_etl.backfill.report import collect_report
from regional_etl.checks import ORDERS_GATES, Verdict, partition_check_results
from regional_etl.definitions import defs
from regional_etl.partitions import DateRegion, date_region_partitions
from regional_etl_tests.conftest import Pipeline
from regional_etl_tests.e2e_support import dagster_dev, loaded_location, product_env

REPO = Path(__file__).resolve().parents[1]
ORDERS = AssetKey("orders")


def test_an_in_process_workspace_serves_the_backfill_graphql(
    pipeline: Pipeline, instance: DagsterInstance
) -> None:
    """With a daemon but no webserver URL, the backfill goes to the webserver's GraphQL API served
    in this process (`dagster_private.in_process_graphql`): the same mutation, the same backfill
    on the instance."""
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
    with daemon.graphql_api(pipeline.defs, instance) as graphql:
        with pytest.raises(RuntimeError, match="no-such-backfill"):
            daemon.progress(graphql, "no-such-backfill", ORDERS)
        # Submitted exactly as the UI submits it, it is an asset backfill on the instance.
        backfill_id = daemon.launch(graphql, params)
        assert daemon.progress(graphql, backfill_id, ORDERS).total == 1
    submitted = instance.get_backfill(backfill_id)
    assert submitted is not None and submitted.is_asset_backfill
    assert submitted.title == "guard"


@pytest.mark.slow
def test_a_webserver_takes_the_same_backfill_over_http(tmp_path: Path) -> None:
    """`--webserver URL`: the backfill for the daemon goes to a real webserver's /graphql."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = product_env(home, tmp_path / "landing", tmp_path / "warehouse", PYTHONPATH=str(REPO))
    ready = [DateRegion("2024-03-04", "eu-west"), DateRegion("2024-03-05", "eu-west")]
    with (
        dagster_dev(
            "regional_etl.definitions", home, env, tmp_path / "web.log", daemon=False
        ) as web,
        DagsterInstance.from_config(str(home)) as instance,
    ):
        loaded_location(web)
        with daemon.graphql_api(defs, instance, webserver=web.url + "/") as graphql:
            with pytest.raises(RuntimeError, match="no-such-backfill"):
                daemon.progress(graphql, "no-such-backfill", ORDERS)
            params = backfill.backfill_params(defs, ready, "over http")
            backfill_id = daemon.launch(graphql, params)
            state = daemon.progress(graphql, backfill_id, ORDERS)
        # No daemon here: it waits, as one launched from the UI would.
        assert (state.status, state.total, state.done) == ("REQUESTED", 2, 0)
        submitted = instance.get_backfill(backfill_id)
        assert submitted is not None and submitted.is_asset_backfill
        assert submitted.title == "over http"


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
    report = collect_report(instance, "b1", ready, ORDERS)
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
