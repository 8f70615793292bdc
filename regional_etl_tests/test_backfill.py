"""The backfill front end's use of Dagster internals, checked without Spark: it fails loudly on a
Dagster upgrade that moves them. The behaviour itself (range runs, a blocked date, the daemon
executing a backfill the command submitted) is tested in test_gates.py and test_e2e.py."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from regional_etl import backfill
from regional_etl.partitions import DateRegion
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
