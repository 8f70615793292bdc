"""(u): the backfill a user launches in the UI, timed from the click to the backfill's end.

`dagster dev` (webserver + daemon, the project's workspace.yaml, the product's run concurrency)
on a fresh instance; the same `launchPartitionBackfill` mutation the UI's "Materialize all" over
the date range posts to /graphql; the daemon executes it (runs in their own processes, Spark
Connect clients of the warm local server). The landing sensor and the automation sensor are
stopped first, over the same GraphQL API (the UI's toggle), so that only the backfill does the
work: with them on, the landing sensor would ingest the same drops. As in the UI tests, they are
stopped before any drop exists: (u) reads a landing folder of its own, empty until then, into
which the benchmark's drops are then hard-linked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import PROJECT, dagster_home, pipeline_env, spawn, stop_group
from benchmarks.per_partition import dagster_cli
from regional_etl_tests.e2e_support import DEFAULT_SIGNALS, free_port

SENSORS = ("landing_sensor", "regional_automation")
# What a smoke run's (u) backfills: one layer of the asset graph. Dagster's backfill daemon looks
# at a backfill every 30 s (`DEFAULT_DAEMON_INTERVAL_SECONDS`, not configurable) and launches each
# layer on a later look than the one before, so the four layers alone wait about two minutes,
# which is all a smoke run may take. The UI's backfill of every layer is walked in CI by
# `test_ui.py::test_browser_materializes_all_over_a_date_range`; a full run times all of it.
SMOKE_ASSETS = ("fx_rates",)
# The webserver computes a backfill's status per partition on every query: polled faster, the
# probe itself takes CPU from the runs it times (the UI's Backfills page refreshes about as often).
POLL_SECONDS = 2.0


def _graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.loads(response.read())
    if reply.get("errors"):
        raise RuntimeError(f"GraphQL: {reply['errors']}")
    return reply["data"]


class Stopped(RuntimeError):
    """The benchmark asked (u) to stop before its backfill ended."""


def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Stopped("(u) stopped: the benchmark is ending")


def _wait(
    what: str,
    ready: Any,
    timeout: float,
    proc: subprocess.Popen,
    log: Path,
    stop: threading.Event | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check(stop)
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited ({proc.returncode}) waiting for {what}: {log}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"no {what} after {timeout:.0f} s: see {log}")


DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
SENSOR_STATES = """
{
  repositoriesOrError {
    ... on RepositoryConnection { nodes { sensors { name sensorState { id } } } }
  }
}
"""
STOP_SENSOR = """
mutation ($id: String!) { stopSensor(id: $id) { __typename ... on PythonError { message } } }
"""

RUNS = """
query ($f: RunsFilter) {
  runsOrError(filter: $f) { ... on Runs { results { creationTime startTime endTime } } }
}
"""


def _sensor_states(url: str) -> dict[str, str]:
    """Sensor name -> instigator state id, once the webserver has loaded the code location."""
    data = _graphql(url, SENSOR_STATES, {})["repositoriesOrError"]
    return {s["name"]: s["sensorState"]["id"] for r in data.get("nodes", []) for s in r["sensors"]}


def run_ui_backfill(
    work: Path,
    name: str,
    landing: Path,
    start: str,
    end: str,
    fx_url: str,
    min_rows: int,
    stop: threading.Event | None = None,
    smoke: bool = False,
    launch_after: threading.Event | None = None,
) -> dict[str, Any]:
    """(u) once; `stop` (set by another thread) ends it, and its `dagster dev`, at the next
    poll; `launch_after`, once set, lets the backfill start (the Spark server is up).

    `smoke` backfills SMOKE_ASSETS only, and clicks as soon as the sensors are stopped instead of
    once the backfill daemon reports healthy: see SMOKE_ASSETS."""
    from regional_etl.backfill import LAUNCH, STATUS, TERMINAL, backfill_params
    from regional_etl.contract import REGIONS
    from regional_etl.definitions import defs
    from regional_etl.partitions import DateRegion, date_range

    home = dagster_home(work / f"home-{name}")
    product = yaml.safe_load((PROJECT / "dagster.yaml").read_text())
    with open(home / "dagster.yaml", "a") as config:
        yaml.safe_dump({k: product[k] for k in ("concurrency", "run_queue", "run_retries")}, config)
    # Empty until the sensors are stopped: see the module's docstring.
    own_landing = work / f"landing-{name}"
    own_landing.mkdir(parents=True)
    env = pipeline_env(home, own_landing, work / f"warehouse-{name}", fx_url, min_rows)
    log = work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # DEFAULT_SIGNALS: SIGTERM stops it at once even when the benchmark runs in a background job.
    argv = [*DEFAULT_SIGNALS, dagster_cli(), "dev", "-w", "workspace.yaml"]
    argv += ["-h", "127.0.0.1", "-p", str(port)]
    with open(log, "wb") as out:
        proc = spawn(argv, env, out, PROJECT)
        try:
            _wait(
                "webserver",
                lambda: urllib.request.urlopen(f"{url}/server_info", timeout=5),
                300,
                proc,
                log,
                stop,
            )
            states: dict[str, str] = {}

            def location_loaded() -> bool:
                states.update(_sensor_states(url))
                return set(SENSORS) <= set(states)

            _wait("the code location's sensors", location_loaded, 300, proc, log, stop)
            for sensor in SENSORS:
                stopped = _graphql(url, STOP_SENSOR, {"id": states[sensor]})["stopSensor"]
                if stopped["__typename"] != "StopSensorMutationResult":
                    raise RuntimeError(f"stopSensor {sensor}: {stopped}")
            # Hard links: the same files at no cost, however large the input.
            shutil.copytree(landing, own_landing, copy_function=os.link, dirs_exist_ok=True)

            def daemons_up() -> bool:
                statuses = _graphql(url, DAEMONS, {})["instance"]["daemonHealth"]
                return any(
                    d["daemonType"] == "BACKFILL" and d["healthy"]
                    for d in statuses["allDaemonStatuses"]
                )

            if not smoke:
                # The timed click meets a daemon that is running, not one that is starting.
                _wait("healthy backfill daemon", daemons_up, 300, proc, log, stop)
            ready = [DateRegion(d, r) for d in date_range(start, end) for r in REGIONS]
            params = backfill_params(defs, ready, f"benchmark {start}..{end}")
            if smoke:
                params["partitionsByAssets"] = [
                    p
                    for p in params["partitionsByAssets"]
                    if p["assetKey"]["path"][-1] in SMOKE_ASSETS
                ]
            while launch_after is not None and not launch_after.wait(1.0):
                _check(stop)
            clicked, clicked_at = time.perf_counter(), time.time()
            launched = _graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
            backfill_id = launched["backfillId"]
            while True:
                data = _graphql(url, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
                if data["status"] in TERMINAL:
                    break
                _check(stop)
                time.sleep(POLL_SECONDS)
            wall, ended_at = time.perf_counter() - clicked, time.time()
            counts = {
                "/".join(s["assetKey"]["path"]): s["numPartitionsMaterialized"]
                for s in data["assetBackfillData"]["assetBackfillStatuses"]
            }
            runs = _graphql(
                url,
                RUNS,
                {"f": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}},
            )["runsOrError"]["results"]
        finally:
            stop_group(proc, grace=30.0)
    return {
        "wall_s": round(wall, 3),
        "status": data["status"],
        "runs": len(runs),
        "materialized": counts,
        # Epoch seconds, the runs' clock: the step profile finds the daemon's waits in them.
        "clicked_at": round(clicked_at, 3),
        "ended_at": round(ended_at, 3),
        "run_timeline": [
            {"created": r["creationTime"], "started": r["startTime"], "ended": r["endTime"]}
            for r in runs
        ],
        "log": str(log),
    }
