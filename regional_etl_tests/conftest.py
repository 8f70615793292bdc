"""Shared fixtures: one real SparkSession per test session, real Delta tables in tmp_path, a
real FX server on a loopback port and real Dagster instances."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, Definitions, instance_for_test

from regional_etl.checks import QualityGateResource
from regional_etl.definitions import build_definitions
from regional_etl.fx.server import FXServer
from regional_etl.resources.fx import FXRatesResource
from regional_etl.resources.warehouse import BLUE, WarehouseResource
from regional_etl.spark import server as spark_server
from regional_etl.spark.resource import SparkResource
from regional_etl_tests.fx_faults import FaultyFXServer
from regional_etl_tests.procs import SESSION_MARKER, marked_processes

# Tiny partitions: two shuffle partitions are plenty and keep task scheduling cheap.
TEST_SPARK_CONF = {"spark.sql.shuffle.partitions": "2"}
# The servers a test starts for itself (to kill them, or to watch them start and stop) live a
# minute or two: the C1 compiler alone and the serial collector spend far less CPU compiling and
# collecting than the product's settings would. Not for the shared server, which does the
# suite's work for its whole length: C1's slower code cost more than the compiling it saved.
SMALL_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
SHORT_LIVED_SERVER_CONF = f"spark.driver.extraJavaOptions={SMALL_JVM}"


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """The suite ends with no java or dagster process of its own: every process it starts
    inherits a marker unique to this session, and none that carries it may outlive the session.
    The shared local Spark server is the one exception: `pytest_unconfigure` stops it at the
    very end, or leaves it to the clients of other sessions and its idle stop."""
    marker = uuid.uuid4().hex
    os.environ[SESSION_MARKER] = marker
    yield
    shared = spark_server.read_state()
    spared = {shared.supervisor_pid, shared.jvm_pid} if shared else set()
    # Process groups are ended with a grace; give the last ones the same time to go.
    deadline = time.monotonic() + 30
    while True:
        left = {p: c for p, c in marked_processes(marker).items() if p not in spared}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left, f"processes of this test session still running: {left}"


@pytest.fixture(autouse=True)
def no_dagster_instance_context_leaks_into_the_next_test() -> Iterator[None]:
    """Each test starts outside any Dagster instance context. Entering an instance sets a
    context variable, Dagster's current definitions-state storage, that every later load of a
    `Definitions` reads (`materialize`, `execute_in_process`); a context Dagster enters lazily
    and holds until it is exited (a schedule or sensor context built from an instance ref,
    `build_init_resource_context()`), or a module fixture's instance that is torn down after
    the tests' own teardown, can leave it pointing at an instance whose temporary folder is
    already deleted. Measured in whole-suite runs: a later `materialize()` in the same worker
    failed with "unable to open database file" on such a folder. A test's own instance (the
    `instance` fixture) is entered after this reset, so it is the one its loads see."""
    from dagster._core.storage.defs_state.base import _current_storage  # no public reset

    before = _current_storage.get()
    _current_storage.set(None)
    yield
    _current_storage.set(before)


# The product's local Spark Connect server is started by whichever test first needs it (a Spark
# test, or a run under `dagster dev`) in whichever pytest-xdist worker runs it first. The process
# that runs no tests (the xdist controller, or pytest itself without xdist) decides at the very
# end, once every worker has ended: the server is stopped again unless it was running before
# the suite (a developer's) or another client still uses it (another test session).
SERVER_WAS_RUNNING = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        config.stash[SERVER_WAS_RUNNING] = spark_server.read_state() is not None


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or config.stash.get(SERVER_WAS_RUNNING, True):
        return
    state = spark_server.read_state()
    if state is not None and not state.connected_clients():
        spark_server.stop()


@pytest.fixture(scope="session")
def spark_server_state() -> spark_server.ServerState:
    """The local server, started now if no test started it yet."""
    return spark_server.ensure_running()


@pytest.fixture(scope="session")
def spark(spark_server_state: spark_server.ServerState) -> Iterator[Any]:
    """The test session's own Spark Connect session (every SparkResource opens its own), set
    up as the product sets up a small step: the tests read and judge a few thousand rows."""
    resource = SparkResource(session_config=TEST_SPARK_CONF)
    session = resource.session_for(0)
    yield session
    session.stop()


# FX client settings for tests: real retries and backoff, in milliseconds instead of seconds.
FAST_FX_CLIENT: dict[str, Any] = {
    "timeout_seconds": 2.0,
    "max_attempts": 3,
    "backoff_base_seconds": 0.01,
    "backoff_max_seconds": 0.05,
}


@pytest.fixture(scope="session")
def pipeline_fx_server() -> Iterator[FXServer]:
    """The product's FX server, shared by the pipeline tests."""
    with FXServer() as server:
        yield server


@pytest.fixture
def fx_server() -> Iterator[FaultyFXServer]:
    """A fault-injecting server for this test only, so its faults never reach another test."""
    with FaultyFXServer() as server:
        yield server


@pytest.fixture
def breaker_url(tmp_path: Path) -> str:
    """A circuit-breaker state file of this test's own."""
    return f"sqlite:///{tmp_path / 'fx_circuit_breaker.sqlite'}"


@dataclass
class Pipeline:
    """A complete, isolated pipeline: landing zone and warehouse in tmp_path, its own FX
    breaker file, the real code location built with these resources."""

    landing: Path
    warehouse: Path
    resources: dict[str, Any]
    defs: Definitions

    def table(self, name: str) -> str:
        return str(self.warehouse / name)


def pipeline_resources(root: Path, fx_url: str, namespace: str = BLUE) -> dict[str, Any]:
    """The resources of a test code location writing `namespace` under `root` (landing and
    warehouse shared by every namespace), its FX rates from `fx_url`."""
    breaker = "breaker.sqlite" if namespace == BLUE else f"breaker-{namespace}.sqlite"
    return {
        "spark": SparkResource(session_config=TEST_SPARK_CONF),
        "warehouse": WarehouseResource(
            landing_root=str(root / "landing"),
            warehouse_root=str(root / "warehouse"),
            namespace=namespace,
        ),
        # Test drops are small: the volume gate's floor is scaled down with them.
        "quality_gates": QualityGateResource(min_rows=10, max_quarantine_ratio=0.5),
        "fx": FXRatesResource(
            base_url=fx_url,
            breaker_storage_url=f"sqlite:///{root / breaker}",
            backoff_base_seconds=0.01,
            backoff_max_seconds=0.05,
        ),
    }


def build_pipeline(root: Path, fx_url: str) -> Pipeline:
    """The test pipeline under `root`, its FX rates from `fx_url`."""
    resources = pipeline_resources(root, fx_url)
    landing, warehouse = root / "landing", root / "warehouse"
    return Pipeline(landing, warehouse, resources, build_definitions(resources))


@pytest.fixture
def pipeline(tmp_path: Path, spark: Any, pipeline_fx_server: FXServer) -> Pipeline:
    return build_pipeline(tmp_path, pipeline_fx_server.url)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


# Each file's seconds in one clean-clone CI run (2 workers, s7-1 of 2026-12-07), the files
# under 10 s left out. `scripts/test.sh` hands whole files to two xdist workers in this order:
# longest first, so that the short ones even out the end instead of a long file starting late
# and leaving one worker running alone (in that run the last 85 s ran on one worker). Update
# the figures when a file gains or loses a minute.
FILE_SECONDS = {
    "test_crash_safety.py": 442,
    "test_ui.py": 238,
    "test_idempotency.py": 156,
    "test_e2e.py": 138,
    "test_scale_out.py": 138,
    "test_release_live_moves.py": 134,
    "test_benchmarks_quick.py": 131,
    "test_exactly_once.py": 120,
    "test_release_cycles.py": 120,  # measured alone beside test_exactly_once.py, not in CI
    "test_release.py": 119,
    "test_automation.py": 115,
    "test_postgres_instance.py": 87,
    "test_pipeline.py": 85,
    "test_same_partition_writers.py": 65,
    "test_spark_server.py": 59,
    "test_release_live_writes.py": 54,
    "test_gates.py": 53,
    "test_hostile_input.py": 52,
    "test_cli.py": 45,
    "test_fx_resilience.py": 36,
    "test_range_isolation.py": 35,
    "test_run_isolation.py": 34,
    "test_fx_sources.py": 26,
    "test_fx_faults_e2e.py": 16,
    "test_backfill.py": 15,
    "test_other_engines.py": 12,
    "test_fx_resource.py": 11,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files longest first, by FILE_SECONDS, then the slow tests of a file before its
    others (a stable sort: otherwise collection order stays)."""

    def rank(item: pytest.Item) -> tuple[int, bool]:
        return -FILE_SECONDS.get(item.path.name, 0), item.get_closest_marker("slow") is None

    items.sort(key=rank)
