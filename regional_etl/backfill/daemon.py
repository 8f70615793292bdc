"""A backfill the daemon executes: submitted and followed over Dagster's GraphQL API, with the
documents the UI sends, so it is the UI's own asset backfill and is listed on its Backfills
page."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import AssetKey, DagsterInstance, Definitions

from regional_etl import dagster_private
from regional_etl.backfill.report import Progress
from regional_etl.dagster_private import GraphQL
from regional_etl.io import http_retry

LOCATION_NAME = "regional_etl"  # workspace.yaml's name: runs link to the same location in the UI
# A daemon whose backfill loop has not reported for this long is taken as gone.
DAEMON_HEARTBEAT_SECONDS = 60.0

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""

STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted
            numPartitionsInProgress
            numPartitionsMaterialized
            numPartitionsFailed
          }
        }
      }
    }
    ... on Error { message }
  }
}"""

TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def daemon_running(instance: DagsterInstance) -> bool:
    """True when a `dagster-daemon` (alone or under `dagster dev`) runs backfills on this
    instance: then it executes the backfill, as it would one launched from the UI."""
    heartbeat = instance.get_daemon_heartbeats().get("BACKFILL")
    return heartbeat is not None and time.time() - heartbeat.timestamp < DAEMON_HEARTBEAT_SECONDS


@contextmanager
def graphql_api(
    defs: Definitions, instance: DagsterInstance, webserver: str | None = None
) -> Iterator[GraphQL]:
    """Dagster's GraphQL API over `instance`: the webserver's at the base URL `webserver`, else
    the same API served in this process over `defs`."""
    if webserver:
        url = f"{webserver.rstrip('/')}/graphql"
        yield lambda query, variables: _post(url, query, variables)
        return
    with dagster_private.in_process_graphql(defs, instance, LOCATION_NAME) as graphql:
        yield graphql


def _post(url: str, query: str, variables: Mapping[str, Any]) -> Mapping[str, Any]:
    sent = http_retry.send(
        "POST",
        url,
        what="Dagster GraphQL",
        log=logging.getLogger(__name__),
        attempts=3,
        timeout=60,
        backoff_seconds=1.0,
        backoff_max_seconds=10.0,
        json={"query": query, "variables": dict(variables)},
    )
    try:  # an answer with GraphQL errors has a 4xx status: its body says which
        return sent.response.json()  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise RuntimeError(f"{url}: {sent.failure or 'not a GraphQL answer'}") from None


def _data(graphql: GraphQL, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    result = graphql(query, variables)
    data = result.get("data")
    if result.get("errors") or data is None:
        raise RuntimeError(f"GraphQL: {result.get('errors')}")
    return data


def params(targets: Mapping[AssetKey, Sequence[str]], title: str) -> dict[str, Any]:
    """`LaunchBackfillParams` of the partitions `targets` of each asset, as the UI sends them."""
    selectors = [
        {
            "assetKey": {"path": key.path},
            "partitions": {"ranges": [{"start": k, "end": k} for k in keys]},
        }
        for key, keys in targets.items()
    ]
    return {"partitionsByAssets": selectors, "title": title}


def launch(graphql: GraphQL, backfill_params: Mapping[str, Any]) -> str:
    """Submit an asset backfill (`params`) as the UI submits it; its id."""
    launched = _data(graphql, LAUNCH, {"params": backfill_params})["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"the backfill was refused: {launched.get('message', launched)}")
    return launched["backfillId"]


def progress(graphql: GraphQL, backfill_id: str, orders: AssetKey) -> Progress:
    """How far the daemon has taken the backfill, as the UI's Backfills page shows it."""
    data = _data(graphql, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if data["__typename"] != "PartitionBackfill":
        raise RuntimeError(f"backfill {backfill_id}: {data.get('message', data)}")
    counts = {
        tuple(s["assetKey"]["path"]): s
        for s in data["assetBackfillData"]["assetBackfillStatuses"]
        if "assetKey" in s
    }
    counted = counts.get(tuple(orders.path), {})
    return Progress(
        data["status"],
        counted.get("numPartitionsMaterialized", 0),
        counted.get("numPartitionsFailed", 0),
        counted.get("numPartitionsTargeted", 0),
    )
