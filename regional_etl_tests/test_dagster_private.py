"""The private Dagster APIs the package uses, all in `regional_etl/dagster_private.py`, checked
without Spark: a Dagster upgrade that moves or changes one fails here first. When a test fails,
look for a public API that now does the same (each function's docstring says what is missing)
and drop the private use; else fix the adapter to what Dagster became."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import dagster
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    DagsterInstance,
    Definitions,
    asset,
)

from regional_etl import dagster_private

PACKAGE = Path(dagster_private.__file__).parent
PRIVATE = re.compile(r"\bdagster(_graphql)?\._|dagster_graphql\.cli\b")


def test_the_adapter_was_checked_against_the_installed_dagster() -> None:
    assert dagster.__version__ == dagster_private.DAGSTER_VERSION, (
        "Dagster upgraded: check every use in regional_etl/dagster_private.py, then its version"
    )


def test_nothing_else_in_the_package_uses_a_private_dagster_api() -> None:
    users = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if PRIVATE.search(path.read_text())
    }
    assert users == {"dagster_private.py"}


@asset
def stand_in() -> None:
    """An asset for the served code location."""


def test_in_process_graphql_answers_as_the_webserver_would(instance: DagsterInstance) -> None:
    defs = Definitions(assets=[stand_in])
    query = "query { workspaceOrError { ... on Workspace { locationEntries { name } } } }"
    with dagster_private.in_process_graphql(defs, instance, "a_location") as graphql:
        answer = graphql(query, {})
    entries = answer["data"]["workspaceOrError"]["locationEntries"]
    assert [e["name"] for e in entries] == ["a_location"]


def test_a_check_result_can_aim_at_one_materialization_only_privately() -> None:
    # Still no public way: AssetCheckResult takes no partition, and the target type is private.
    assert "partition" not in inspect.signature(AssetCheckResult).parameters
    assert not hasattr(dagster, "AssetCheckEvaluationTargetMaterializationData")
    target = dagster_private.materialization_target(run_id="r1", storage_id=7, timestamp=1.5)
    assert (target.run_id, target.storage_id, target.timestamp) == ("r1", 7, 1.5)
    evaluation = AssetCheckEvaluation(
        asset_key=AssetKey("orders"),
        check_name="volume",
        passed=True,
        target_materialization_data=target,
        partition="2024-03-04|eu-west",
    )
    assert evaluation.target_materialization_data == target


@asset(check_specs=[AssetCheckSpec("volume", asset="checked")])
def checked():
    """An asset with one check."""


def test_a_check_output_name_is_one_of_the_step_outputs() -> None:
    name = dagster_private.check_output_name(checked, AssetCheckKey(AssetKey("checked"), "volume"))
    # The step's outputs: the asset's and the check's.
    assert len(checked.node_def.output_dict) == 2 and name in checked.node_def.output_dict
