"""End to end, the way a user runs it: `dagster dev` on a temp project folder with landing drops,
driven only over its GraphQL API, with the daemon doing the work.

The landing sensor must launch the FX run of the date and one regional run per drop, the
automation sensor must then launch daily_revenue once all four regions are materialized and
their blocking checks passed; the Delta tables on disk must hold every landing line.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster_graphql import DagsterGraphQLClient

from regional_etl.checks import ORDERS_GATES
from regional_etl.contract import REGIONS
from regional_etl.generate import GenerateSummary, generate_landing
from regional_etl_tests.e2e_support import (
    BACKFILL_QUERY,
    CHECK_EXECUTIONS_QUERY,
    HOST,
    MATERIALIZATIONS_QUERY,
    DagsterDev,
    E2EError,
    backfill_counts,
    dagster_dev,
    isolated_env,
    loaded_location,
)
from regional_etl_tests.procs import process_groups

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MODULE = "regional_etl.definitions"
DATE = "2024-03-04"  # a Monday inside the bundled ECB history
ROWS = 40

# Bounded waits, generous for a loaded 2-core machine (nothing asserts on wall time). The runs
# are Spark Connect clients of the one local server; when each run still started its own JVM,
# the date took 11 min to reach gold here, the bound this keeps.
STARTUP_TIMEOUT = 180.0
PIPELINE_TIMEOUT = 25 * 60.0
# After a run of the date failed: time for a daemon run retry to show up before giving up.
FAILURE_GRACE = 120.0
POLL = 10.0

ASSETS = {
    "fx_rates": ("TIME_WINDOW", []),
    "raw_orders": ("MULTIPARTITIONED", [("date", "TIME_WINDOW"), ("region", "STATIC")]),
    "orders": ("MULTIPARTITIONED", [("date", "TIME_WINDOW"), ("region", "STATIC")]),
    "orders_quarantine": ("MULTIPARTITIONED", [("date", "TIME_WINDOW"), ("region", "STATIC")]),
    "daily_revenue": ("TIME_WINDOW", []),
}
SENSORS = {"landing_sensor", "regional_automation", "run_failure_alert", "delivery_deadline_sensor"}
SCHEDULES = {"fx_rates_daily", "regional_orders_daily"}
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

ASSET_NODES_QUERY = """
query {
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    partitionDefinition { type dimensionTypes { name type } }
  }
}
"""
INSTIGATORS_QUERY = """
query ($repo: RepositorySelector!) {
  sensorsOrError(repositorySelector: $repo) {
    __typename
    ... on Sensors { results { name minIntervalSeconds sensorState { status } } }
    ... on PythonError { message }
  }
  schedulesOrError(repositorySelector: $repo) {
    __typename
    ... on Schedules { results { name scheduleState { status } } }
    ... on PythonError { message }
  }
}
"""
RUNS_QUERY = """
query {
  runsOrError(limit: 500) {
    __typename
    ... on Runs {
      results { runId jobName status creationTime parentRunId tags { key value } }
    }
    ... on PythonError { message }
  }
}
"""
RUN_EVENTS_QUERY = """
query ($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      eventConnection(limit: 1000) {
        events {
          __typename
          ... on MessageEvent { message stepKey level }
          ... on ErrorEvent { error { message } }
        }
      }
    }
  }
}
"""
TICKS_QUERY = """
query ($sensor: SensorSelector!) {
  sensorOrError(sensorSelector: $sensor) {
    __typename
    ... on Sensor {
      sensorState {
        status
        ticks(limit: 8) { status timestamp runIds skipReason error { message } }
      }
    }
  }
}
"""


# --- small GraphQL accessors ----------------------------------------------------------------


def tags_of(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def all_runs(dev: DagsterDev) -> list[dict[str, Any]]:
    data = dev.graphql(RUNS_QUERY)["runsOrError"]
    if data["__typename"] != "Runs":
        raise E2EError(f"runsOrError: {data}")
    return data["results"]


def runs_of_date(dev: DagsterDev) -> list[dict[str, Any]]:
    """Runs whose partition is DATE or one of its (DATE, region) keys."""
    keep = []
    for run in all_runs(dev):
        tags = tags_of(run)
        key = tags.get("dagster/partition", "")
        lo = tags.get("dagster/asset_partition_range_start", "")
        if key.split("|")[0] == DATE or lo.split("|")[0] == DATE:
            keep.append(run)
    return sorted(keep, key=lambda r: r["creationTime"])


def materialized_partitions(dev: DagsterDev, asset: str, partitions: list[str]) -> set[str]:
    data = dev.graphql(
        MATERIALIZATIONS_QUERY, {"key": {"path": [asset]}, "partitions": partitions}
    )["assetOrError"]
    if data["__typename"] != "Asset":  # AssetNotFoundError until its first materialization
        return set()
    return {m["partition"] for m in data["assetMaterializations"]}


def run_errors(dev: DagsterDev, run_id: str) -> list[str]:
    data = dev.graphql(RUN_EVENTS_QUERY, {"runId": run_id})["runOrError"]
    if data["__typename"] != "Run":
        return [str(data)]
    lines = []
    for event in data["eventConnection"]["events"]:
        if event.get("level") in ("ERROR", "CRITICAL") or event["__typename"] in (
            "ExecutionStepFailureEvent",
            "ExecutionStepUpForRetryEvent",
            "RunFailureEvent",
        ):
            error = (event.get("error") or {}).get("message", "")
            lines.append(
                f"{event['__typename']} {event.get('stepKey')}: {event['message']} {error}"
            )
    return lines


def diagnostics(dev: DagsterDev, repo: dict[str, str] | None) -> str:
    """Everything that helps after a failure: runs of the date with their errors, the last
    sensor ticks, the dev log tail. Never raises."""
    out: list[str] = []
    try:
        for run in runs_of_date(dev):
            tags = tags_of(run)
            out.append(
                f"run {run['runId']} {run['jobName']} {tags.get('dagster/partition')} "
                f"{run['status']} sensor={tags.get('dagster/sensor_name')}"
            )
            if run["status"] == "FAILURE":
                out.extend(f"    {line[:1500]}" for line in run_errors(dev, run["runId"]))
    except Exception as exc:
        out.append(f"<runs unavailable: {exc!r}>")
    if repo is not None:
        for name in sorted(SENSORS):
            try:
                sensor = {**repo, "sensorName": name}
                data = dev.graphql(TICKS_QUERY, {"sensor": sensor})["sensorOrError"]
                out.append(f"sensor {name}: {json.dumps(data)[:3000]}")
            except Exception as exc:
                out.append(f"<ticks of {name} unavailable: {exc!r}>")
    out.append(f"--- dagster dev log tail ({dev.log}) ---")
    out.append(dev.log_tail(200))
    return "\n".join(out)


# --- the stages -----------------------------------------------------------------------------


def assert_definitions(dev: DagsterDev, repo: dict[str, str]) -> None:
    nodes = {
        "/".join(n["assetKey"]["path"]): n for n in dev.graphql(ASSET_NODES_QUERY)["assetNodes"]
    }
    # The release tooling (release_diff takes its range as config) loads only in a release
    # location: everything here launches without config.
    assert set(nodes) == set(ASSETS)
    for name, (kind, dims) in ASSETS.items():
        parts = nodes[name]["partitionDefinition"]
        assert parts is not None, f"{name} is not partitioned"
        assert parts["type"] == kind, (name, parts)
        got_dims = sorted((d["name"], d["type"]) for d in parts["dimensionTypes"])
        if dims:
            assert got_dims == dims, (name, got_dims)
    deps = {k: {"/".join(d["path"]) for d in n["dependencyKeys"]} for k, n in nodes.items()}
    assert deps["orders"] == {"raw_orders", "fx_rates"}
    assert deps["daily_revenue"] == {"orders"}

    data = dev.graphql(INSTIGATORS_QUERY, {"repo": repo})
    sensors, schedules = data["sensorsOrError"], data["schedulesOrError"]
    assert sensors["__typename"] == "Sensors", sensors
    assert schedules["__typename"] == "Schedules", schedules
    sensor_status = {s["name"]: s["sensorState"]["status"] for s in sensors["results"]}
    schedule_status = {s["name"]: s["scheduleState"]["status"] for s in schedules["results"]}
    assert sensor_status == dict.fromkeys(SENSORS, "RUNNING")
    assert schedule_status == dict.fromkeys(SCHEDULES, "RUNNING")


def wait_for_daily_revenue(dev: DagsterDev) -> None:
    """Poll until daily_revenue|DATE is materialized; fail early (after a grace for a daemon
    run retry) when a run of the date failed, since nothing would then bring the date to gold."""
    deadline = time.monotonic() + PIPELINE_TIMEOUT
    failed_since: float | None = None
    last = ""
    while True:
        dev.check_alive()
        if DATE in materialized_partitions(dev, "daily_revenue", [DATE]):
            return
        runs = runs_of_date(dev)
        state = ", ".join(
            f"{r['jobName']}[{tags_of(r).get('dagster/partition')}]={r['status']}" for r in runs
        )
        if state != last:
            print(f"{dt.datetime.now():%H:%M:%S} runs of {DATE}: {state or 'none yet'}")
            last = state
        failed = [r for r in runs if r["status"] == "FAILURE"]
        active = [r for r in runs if r["status"] not in TERMINAL]
        if failed and not active:
            failed_since = failed_since or time.monotonic()
            if time.monotonic() - failed_since > FAILURE_GRACE:
                raise E2EError(f"runs of {DATE} failed and none is left to bring it to gold")
        else:
            failed_since = None
        if time.monotonic() > deadline:
            raise E2EError(f"daily_revenue|{DATE} not materialized within {PIPELINE_TIMEOUT:.0f}s")
        time.sleep(POLL)


def assert_runs_and_checks(dev: DagsterDev) -> None:
    runs = runs_of_date(dev)
    ok = [r for r in runs if r["status"] == "SUCCESS"]
    fx = [r for r in ok if r["jobName"] == "fx_rates_job"]
    regional = [r for r in ok if r["jobName"] == "regional_orders_job"]
    gold = [r for r in ok if "daily_revenue" in r["jobName"] or r["jobName"] == "__ASSET_JOB"]

    # The landing sensor launched the FX run of the date and one run per drop.
    assert len(fx) == 1, runs
    assert tags_of(fx[0]).get("dagster/sensor_name") == "landing_sensor"
    assert tags_of(fx[0])["dagster/partition"] == DATE
    by_region = {tags_of(r)["dagster/partition/region"]: tags_of(r) for r in regional}
    assert set(by_region) == set(REGIONS), runs
    for region, tags in by_region.items():
        assert tags["dagster/partition"] == f"{DATE}|{region}"
        assert tags["dagster/partition/date"] == DATE
        assert tags.get("dagster/sensor_name") == "landing_sensor"
        assert tags.get("regional_etl/trigger") == "landing_sensor"
    # The automation sensor, not a schedule or a person, launched daily_revenue.
    assert len(gold) == 1, runs
    assert tags_of(gold[0]).get("dagster/sensor_name") == "regional_automation", gold[0]
    assert set(materialized_partitions(dev, "daily_revenue", [DATE])) == {DATE}

    # The same answers through the Python GraphQL client a user would script with.
    client = DagsterGraphQLClient(HOST, port_number=dev.port, timeout=60)
    for run in [*fx, *regional, *gold]:
        assert client.get_run_status(run["runId"]).value == "SUCCESS"

    # Every blocking gate of every region passed on the published partition.
    keys = [f"{DATE}|{region}" for region in REGIONS]
    assert materialized_partitions(dev, "orders", keys) == set(keys)
    assert materialized_partitions(dev, "orders_quarantine", keys) == set(keys)
    for gate in ORDERS_GATES.values():
        if not gate.blocking:
            continue
        for key in keys:
            executions = dev.graphql(
                CHECK_EXECUTIONS_QUERY,
                {"key": {"path": ["orders"]}, "check": gate.name, "partition": key},
            )["assetCheckExecutions"]
            assert executions and executions[0]["status"] == "SUCCEEDED", (
                gate.name,
                key,
                executions,
            )


def assert_warehouse(spark: Any, warehouse: Path, summary: GenerateSummary) -> None:
    from pyspark.sql import functions as F

    def counts(table: str) -> dict[str, int]:
        frame = spark.read.format("delta").load(str(warehouse / table))
        rows = frame.where(F.col("order_date") == F.lit(DATE).cast("date"))
        return {r["region"]: r["count"] for r in rows.groupBy("region").count().collect()}

    lines = {region: summary.drop(DATE, region).lines for region in REGIONS}
    expected_orders = {region: summary.drop(DATE, region).expected_orders for region in REGIONS}
    bronze, orders, quarantine = (
        counts("bronze/raw_orders"),
        counts("silver/orders"),
        counts("silver/orders_quarantine"),
    )
    assert bronze == lines
    assert orders == expected_orders
    for region in REGIONS:
        assert orders.get(region, 0) + quarantine.get(region, 0) == lines[region], region

    gold = (
        spark.read.format("delta")
        .load(str(warehouse / "gold/daily_revenue"))
        .where(F.col("order_date") == F.lit(DATE).cast("date"))
        .collect()
    )
    assert sorted(r["region"] for r in gold) == sorted(REGIONS)
    assert {r["region"]: r["orders"] for r in gold} == expected_orders
    assert all(r["revenue_usd"] > 0 for r in gold)

    fx = spark.read.format("delta").load(str(warehouse / "reference/fx_rates"))
    assert fx.where(F.col("order_date") == F.lit(DATE).cast("date")).count() == 3  # USD EUR INR


# --- the test -------------------------------------------------------------------------------


BACKFILLS_QUERY = """
query {
  partitionBackfillsOrError(limit: 5) {
    ... on PartitionBackfills { results { id status isAssetBackfill title } }
  }
}
"""


def assert_cli_backfill_runs_on_the_daemon(
    dev: DagsterDev, home: Path, env: dict[str, str]
) -> None:
    """`regional-etl backfill` next to a running daemon submits an asset backfill of every asset
    that the daemon executes; it is on the UI's Backfills page with every asset's partitions
    materialized, and the command prints its summary. (test_ui.py checks that these parameters
    cover every asset node the webserver serves.)"""
    argv = [sys.executable, "-m", "regional_etl.cli", "backfill", "--start", DATE]
    with process_groups(
        [*argv, "--end", DATE], cwd=home, env=env, stdout=subprocess.PIPE, text=True
    ) as (proc,):
        out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "executed by the daemon" in out and "4 partitions: 4 succeeded" in out, out
    backfill_id = out.split("backfill ", 1)[1].split()[0]
    listed = dev.graphql(BACKFILLS_QUERY)["partitionBackfillsOrError"]["results"]
    ours = next(b for b in listed if b["id"] == backfill_id)
    assert ours["isAssetBackfill"] and ours["status"] == "COMPLETED_SUCCESS", ours
    done = dev.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
    assert backfill_counts(done) == {
        "fx_rates": (1, 1, 0),
        "raw_orders": (4, 4, 0),
        "orders": (4, 4, 0),
        "orders_quarantine": (4, 4, 0),
        "daily_revenue": (1, 1, 0),
    }


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], GenerateSummary]]:
    """A temp project folder: DAGSTER_HOME (and cwd) with the repo's dagster.yaml, which keeps
    the instance under DAGSTER_HOME; landing drops for DATE x 4 regions; the environment."""
    home = tmp_path / "project"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    day = dt.date.fromisoformat(DATE)
    summary = generate_landing(landing, day, day, rows=ROWS)
    env = isolated_env(
        {
            "DAGSTER_HOME": str(home),
            "REGIONAL_ETL_LANDING": str(landing),
            "REGIONAL_ETL_WAREHOUSE": str(warehouse),
            "REGIONAL_ETL_GATE_MIN_ROWS": "10",
            # The landing sensor launches the FX run next to the regional runs, so `orders` may
            # find no rates yet and step-retry. Short delays keep that quick; five retries keep
            # the window (3+9+21+45+93 s, about what the default 3 x 20 s gives) wide enough
            # for an FX run that is slow on a loaded machine.
            "REGIONAL_ETL_UPSTREAM_STEP_RETRY_DELAY_SECONDS": "3",
            "REGIONAL_ETL_UPSTREAM_STEP_RETRIES": "5",
        }
    )
    yield home, env, summary


def test_dagster_dev_runs_landing_drops_to_gold(
    project: tuple[Path, dict[str, str], GenerateSummary],
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home, env, summary = project
    started = time.monotonic()
    log = home.parent / "dagster-dev.log"
    with dagster_dev(MODULE, home, env, log, STARTUP_TIMEOUT) as dev:
        repo: dict[str, str] | None = None
        try:
            repo = loaded_location(dev)
            assert_definitions(dev, repo)
            print(f"code location up after {time.monotonic() - started:.0f}s")
            wait_for_daily_revenue(dev)
            print(f"daily_revenue|{DATE} materialized after {time.monotonic() - started:.0f}s")
            assert_runs_and_checks(dev)
            assert_cli_backfill_runs_on_the_daemon(dev, home, env)
        except BaseException:
            print(diagnostics(dev, repo))
            raise
    # The instance lived in the temp project folder, its DAGSTER_HOME.
    assert (home / "history" / "runs.db").is_file()
    # Its runs read the bundled FX history in-process: no HTTP, so no breaker and no breaker file.
    assert not (home / "fx_circuit_breaker.sqlite").exists()
    # dagster dev is stopped: the test's own Spark reads what the runs committed.
    assert_warehouse(request.getfixturevalue("spark"), Path(env["REGIONAL_ETL_WAREHOUSE"]), summary)
    with capsys.disabled():  # the one figure worth seeing in every CI log
        print(
            f"\ndagster dev, landing drops to gold, end to end in {time.monotonic() - started:.0f}s"
        )
