"""Scale-out: the same backfill on a Spark standalone cluster and on the local server gives the
same tables, row for row.

The cluster is a master and two one-core workers from the pyspark wheel, with a Spark Connect
server as its driver (`spark_server.server_command` with a `spark://` master), all on
127.0.0.1. Every process is started in its own session, and its whole process group is stopped
(SIGTERM, then SIGKILL) whatever happens: success, failure, a bounded wait running out, or
SIGTERM to pytest. The shared local server is only used, never stopped. docs/deploy.md repeats
these commands for a reader who wants to run them by hand.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, instance_for_test

from regional_etl.backfill import Progress, run_backfill
from regional_etl.contract import REGIONS, Table
from regional_etl.definitions import build_definitions
from regional_etl.fx.server import FXServer
from regional_etl.generate import generate_landing
from regional_etl.resources.fx import FXRatesResource
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark import server as spark_server
from regional_etl.spark.resource import SparkResource
from regional_etl_tests.conftest import SMALL_JVM, TEST_SPARK_CONF, Pipeline
from regional_etl_tests.e2e_support import HOST, E2EError, free_port, isolated_env, wait_for
from regional_etl_tests.procs import group_members, listening_addresses, process_groups

pytestmark = pytest.mark.slow

DATES = ("2024-03-07", "2024-03-09")  # Thursday to Saturday: Saturday takes Friday's rates
ROWS = 200
WORKERS = 2
# Appended to `spark_server.server_command`: small executors, one per one-core worker.
CLUSTER_CONF = {
    "spark.app.name": "regional-etl-scale-out",
    "spark.driver.memory": "1g",
    "spark.driver.extraJavaOptions": SMALL_JVM,
    "spark.executor.memory": "512m",
    "spark.executor.cores": "1",
    "spark.executor.extraJavaOptions": SMALL_JVM,
    "spark.cores.max": str(WORKERS),
    # Wait (at most 30 s, Spark's default) for both executors before the first job.
    "spark.scheduler.minRegisteredResourcesRatio": "1.0",
    # One-core executors: a task waiting 3 s for "its" busy executor is pure delay here.
    "spark.locality.wait": "0s",
    # The driver's UI (on loopback, like every socket here) answers which executor ran tasks.
    "spark.ui.enabled": "true",
}
START_TIMEOUT = 180.0
# Bounds the cluster's backfill (checked between runs): a hung cluster fails the test.
BACKFILL_TIMEOUT = 600.0


@dataclass
class Cluster:
    """A standalone master, its workers and a Connect server, each in a process group of its
    own (`procs.process_groups`), everything under `root`, ended in reverse order of start."""

    root: Path
    groups: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    master_port: int = field(default_factory=free_port)
    master_ui_port: int = field(default_factory=free_port)
    connect_port: int = field(default_factory=free_port)
    driver_ui_port: int = field(default_factory=free_port)

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.master_port}"

    @property
    def remote(self) -> str:
        return f"sc://{HOST}:{self.connect_port}"

    def work_dir(self, worker: int) -> Path:
        return self.root / f"worker-{worker}" / "work"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def spawn(self, name: str, argv: list[str], **env: str) -> None:
        """Start `argv` in a group of its own: output to <root>/logs/<name>.log, working
        directory <root>/<name>, every socket on loopback (SPARK_LOCAL_IP)."""
        cwd, local_dirs = self.root / name, self.root / "local"
        for folder in (cwd, local_dirs, self.log(name).parent):
            folder.mkdir(parents=True, exist_ok=True)
        base = {
            "SPARK_HOME": str(spark_server.spark_home()),
            "SPARK_LOCAL_IP": HOST,
            "SPARK_LOCAL_DIRS": str(local_dirs),
            "MALLOC_ARENA_MAX": "2",
        }
        with open(self.log(name), "wb") as out:
            (self.procs[name],) = self.groups.enter_context(
                process_groups(
                    argv,
                    cwd=cwd,
                    env=isolated_env({**base, **env}),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )

    def start(self) -> None:
        """Master first (a worker that finds no master backs off for seconds), then the workers
        and the Connect server; `wait_ready` waits for those."""
        spark_class = str(spark_server.spark_home() / "bin" / "spark-class")
        # Read by spark-class for the master and worker daemons (the server would take the
        # memory setting as its own heap).
        daemon = {"SPARK_DAEMON_MEMORY": "256m", "SPARK_DAEMON_JAVA_OPTS": SMALL_JVM}
        self.spawn(
            "master",
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", HOST,
             "--port", str(self.master_port), "--webui-port", str(self.master_ui_port)],
            **daemon,
        )  # fmt: skip
        wait_for("the master's web UI", self.master_state, START_TIMEOUT, 1.0, self.check_alive)
        for worker in range(1, WORKERS + 1):
            self.spawn(
                f"worker-{worker}",
                [spark_class, "org.apache.spark.deploy.worker.Worker", self.master_url,
                 "--host", HOST, "--port", str(free_port()), "--webui-port", str(free_port()),
                 "--cores", "1", "--memory", "1g", "--work-dir", str(self.work_dir(worker))],
                **daemon,
            )  # fmt: skip
        command = spark_server.server_command(self.connect_port, master=self.master_url)
        conf = {**CLUSTER_CONF, "spark.ui.port": str(self.driver_ui_port)}
        extra = [arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")]
        # Later settings win; `spark-internal` (the application placeholder) stays last.
        self.spawn("connect", [*command[:-1], *extra, command[-1]])

    def wait_ready(self) -> None:
        def workers_alive() -> bool | None:
            alive = [w for w in self.master_state()["workers"] if w["state"] == "ALIVE"]
            return True if len(alive) == WORKERS else None

        wait_for("two alive workers", workers_alive, START_TIMEOUT, 1.0, self.check_alive)
        wait_for("the Connect server", self.connect_answers, START_TIMEOUT, 1.0, self.check_alive)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise E2EError(f"{name} exited with {proc.returncode}:\n{tail(self.log(name))}")

    def master_state(self) -> dict[str, Any]:
        return get_json(f"http://{HOST}:{self.master_ui_port}/json/")

    def connect_answers(self) -> bool | None:
        with socket.create_connection((HOST, self.connect_port), timeout=2):
            return True

    def executors(self) -> list[dict[str, Any]]:
        """The driver's view of the application's executors (REST API of its UI)."""
        api = f"http://{HOST}:{self.driver_ui_port}/api/v1/applications"
        (app,) = get_json(api)
        return get_json(f"{api}/{app['id']}/allexecutors")

    def pgids(self) -> set[int]:
        return {proc.pid for proc in self.procs.values()}  # each leads its own group


@contextlib.contextmanager
def standalone_cluster(root: Path) -> Iterator[Cluster]:
    """A started cluster (`wait_ready` waits for it), whose groups end on every way out.

    SIGTERM and SIGINT end the groups at once, in the handler, and are then delivered again as
    before: an interrupted Dagster run may swallow a KeyboardInterrupt, and a pytest killed by
    SIGTERM runs no `finally`.
    """
    cluster = Cluster(root)
    previous: dict[int, Any] = {}

    def end_groups_then_resend(signum: int, _frame: object) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        cluster.groups.close()
        os.kill(os.getpid(), signum)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, end_groups_then_resend)
    try:
        with cluster.groups:
            cluster.start()
            yield cluster
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<no log: {exc}>"


def table_content(spark: Any, path: str) -> tuple[list[str], list[tuple]]:
    """Schema (without run_id) and every row, in a stable order."""
    frame = spark.read.format("delta").load(path)
    columns = [c for c in frame.columns if c != "run_id"]
    schema = [f"{f.name}:{f.dataType.simpleString()}" for f in frame.schema if f.name in columns]
    rows = sorted((tuple(r) for r in frame.select(*columns).collect()), key=repr)
    return schema, rows


def test_a_backfill_on_a_standalone_cluster_equals_the_local_one(
    pipeline: Pipeline,
    instance: DagsterInstance,
    spark: Any,
    pipeline_fx_server: FXServer,
    tmp_path: Path,
) -> None:
    first, last = (dt.date.fromisoformat(d) for d in DATES)
    generate_landing(pipeline.landing, first, last, rows=ROWS, seed=23, anomalies=True)
    partitions = ((last - first).days + 1) * len(REGIONS)
    cluster_warehouse = tmp_path / "cluster-warehouse"

    def backfill(resources: dict[str, Any], on: DagsterInstance, deadline: float) -> None:
        def progress(state: Progress) -> None:
            if time.monotonic() > deadline:
                raise E2EError(f"backfill still running after {BACKFILL_TIMEOUT:.0f} s: {state}")

        report = run_backfill(
            build_definitions(resources),
            on,
            DATES[0],
            DATES[-1],
            landing_root=str(pipeline.landing),
            progress=progress,
        )
        assert report.ok, report.outcomes
        assert report.count("succeeded") == partitions

    with standalone_cluster(tmp_path / "cluster") as cluster:
        # The embedded default (the shared local server) first, while the cluster's JVMs boot.
        backfill(pipeline.resources, instance, time.monotonic() + BACKFILL_TIMEOUT)
        cluster.wait_ready()
        cluster_resources = {
            **pipeline.resources,
            "spark": SparkResource(remote=cluster.remote, session_config=TEST_SPARK_CONF),
            "warehouse": WarehouseResource(
                landing_root=str(pipeline.landing), warehouse_root=str(cluster_warehouse)
            ),
            "fx": FXRatesResource(
                base_url=pipeline_fx_server.url,
                breaker_storage_url=f"sqlite:///{tmp_path / 'cluster-breaker.sqlite'}",
                backoff_base_seconds=0.01,
                backoff_max_seconds=0.05,
            ),
        }
        with instance_for_test() as cluster_instance:
            backfill(cluster_resources, cluster_instance, time.monotonic() + BACKFILL_TIMEOUT)
        executors = cluster.executors()
        apps = cluster.master_state()["activeapps"]
        listening = listening_addresses(list(group_members(cluster.pgids())))
        cluster.check_alive()

    # The cluster did the work: the master ran the server's application, each worker launched
    # one executor of it, and each executor completed tasks (the driver runs none).
    assert [a["name"] for a in apps] == [CLUSTER_CONF["spark.app.name"]], apps
    for worker in range(1, WORKERS + 1):
        launched = sorted(p.relative_to(cluster.work_dir(worker)).parts[0]
                          for p in cluster.work_dir(worker).glob("app-*/*/stderr"))  # fmt: skip
        assert launched == [apps[0]["id"]], (worker, launched)
    tasks = {e["id"]: e["completedTasks"] for e in executors if e["id"] != "driver"}
    assert len(tasks) == WORKERS and all(n > 0 for n in tasks.values()), executors
    # Nothing of the cluster listened beyond loopback.
    assert listening and all(ipaddress.ip_address(a).is_loopback for a, _ in listening), listening

    for table in Table:
        local_schema, local_rows = table_content(spark, pipeline.table(table.value))
        cluster_schema, cluster_rows = table_content(spark, str(cluster_warehouse / table.value))
        assert cluster_schema == local_schema, table
        assert local_rows, f"{table} is empty"
        local_set, cluster_set = set(local_rows), set(cluster_rows)
        only_local = [r for r in local_rows if r not in cluster_set][:5]
        only_cluster = [r for r in cluster_rows if r not in local_set][:5]
        assert cluster_rows == local_rows, (table, only_local, only_cluster)
    # The comparison covers the quarantine paths too, not only clean orders.
    reasons = spark.read.format("delta").load(pipeline.table(Table.ORDERS_QUARANTINE.value))
    assert {"malformed", "duplicate"} <= {
        r[0] for r in reasons.select("reason").distinct().collect()
    }

    # Every process of the cluster's groups is gone (reaped, too); the shared server is not.
    wait_for(
        "the cluster's processes to be gone",
        lambda: not group_members(cluster.pgids()) or None,
        15.0,
        0.5,
    )
    assert spark_server.read_state() is not None
