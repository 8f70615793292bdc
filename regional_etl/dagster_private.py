"""Every use of a private Dagster API in the package, each where Dagster 1.13 has no public one.
Nothing else imports `dagster._...`; `regional_etl_tests/test_dagster_private.py` fails on a
Dagster upgrade that moves or changes any of these, so each is looked at again then.

Three uses:
- `in_process_graphql`: the webserver's GraphQL API served in this process, for
  `regional-etl backfill` to hand a backfill to a running daemon when no webserver URL is known.
- `materialization_target` and `check_output_name`: a check result on one partition of a range
  run (`checks.partition_check_results`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dagster import AssetCheckKey, AssetsDefinition, DagsterInstance, Definitions

DAGSTER_VERSION = "1.13.27"  # the release every use below was checked against

# A GraphQL request: the document and its variables -> the response ({"data", "errors"}).
GraphQL = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]

# The code location served in-process: the Definitions given to `in_process_graphql` (tests
# give their own resources), found by the in-process location through this name.
served: Definitions | None = None


@contextmanager
def in_process_graphql(
    defs: Definitions, instance: DagsterInstance, location_name: str
) -> Iterator[GraphQL]:
    """The GraphQL API a webserver would serve over `defs` as the code location
    `location_name` and `instance`, answered in this process: Dagster's public ways to submit an
    asset backfill are the webserver and its UI, and it has no public way to serve that API
    without starting one."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster_graphql.cli import execute_query

    global served
    served = defs
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name=__name__, attribute="served"),
        location_name=location_name,
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        yield lambda query, variables: execute_query(context, query, dict(variables))


def materialization_target(run_id: str, storage_id: int, timestamp: float) -> Any:
    """What an `AssetCheckEvaluation` is about: the materialization with this run, storage id
    and time. `AssetCheckResult` takes no partition, and the type of this target is not
    exported; without a target Dagster takes the result for a stale one."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    return AssetCheckEvaluationTargetMaterializationData(
        run_id=run_id, storage_id=storage_id, timestamp=timestamp
    )


def check_output_name(assets_def: AssetsDefinition, key: AssetCheckKey) -> str:
    """The name of the output a step yields for the check `key`: a step that reports its checks
    as `AssetCheckEvaluation` events must still yield each check's output, by a name only this
    method (not public) knows."""
    return assets_def.get_output_name_for_asset_check_key(key)
