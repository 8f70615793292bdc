"""Helpers for the end-to-end test: a real `dagster dev` in its own process group, reached only
over HTTP (GraphQL) on 127.0.0.1, and stopped as a whole group whatever happens."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

from regional_etl.backfill import STATUS

T = TypeVar("T")

HOST = "127.0.0.1"
DAGSTER_BIN = Path(sys.executable).with_name("dagster")
# The daemons the tests start iterate every 5 s instead of Dagster's fixed 30 s (see
# daemon_tick/sitecustomize.py): a daemon backfill waits one iteration per level of the graph.
# The product's sensors evaluate every 10 s instead of 30 (REGIONAL_ETL_SENSOR_INTERVAL_SECONDS):
# a drop goes from landing to gold in three sensor intervals, and each evaluation of the
# automation sensor costs the daemon CPU the other tests need, so not every 5 s.
DAEMON_TICK_SECONDS = "5"
SENSOR_INTERVAL_SECONDS = "10"
DAEMON_TICK_PATH = Path(__file__).resolve().with_name("daemon_tick")
# A command started in the background of a non-interactive shell, as CI starts the suite,
# inherits SIGINT ignored, and Dagster's CLIs then ignore SIGTERM as well: they give SIGTERM
# whatever SIGINT's handler was at start (dagster._utils.interrupts.setup_interrupt_handlers).
# Every stop of `dagster dev` then waited out both 60 s graces of stop_tree (two per CI run).
# `env --default-signal` hands the child the default dispositions back, so SIGTERM shuts the
# webserver, the daemon and their code servers down as Ctrl-C would.
DEFAULT_SIGNALS = ["env", "--default-signal=INT,TERM"]


def daemon_tick_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the test daemons' short iteration: the sitecustomize folder first on
    PYTHONPATH and its setting, and the sensors' interval unless `env` sets one."""
    path = [str(DAEMON_TICK_PATH), *filter(None, [env.get("PYTHONPATH")])]
    return {
        "REGIONAL_ETL_SENSOR_INTERVAL_SECONDS": SENSOR_INTERVAL_SECONDS,
        **env,
        "PYTHONPATH": os.pathsep.join(path),
        "DAEMON_TICK_SECONDS_FOR_TESTS": DAEMON_TICK_SECONDS,
    }


class E2EError(AssertionError):
    """A bounded wait ran out, the product died, or GraphQL answered with errors."""


def free_port() -> int:
    """A loopback port that was free a moment ago: every test and benchmark server takes its
    port from here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def isolated_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without any project or Dagster setting, plus `extra`: a
    developer's REGIONAL_ETL_FX_URL, fault injection or DAGSTER_HOME must not leak in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGIONAL_ETL_", "DAGSTER_", "PYSPARK_", "SPARK_"))
    }
    # The virtualenv's console scripts first, so run workers find the same interpreter.
    env["PATH"] = f"{DAGSTER_BIN.parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return daemon_tick_env(env)


def product_env(home: Path, landing: Path, warehouse: Path, **extra: str) -> dict[str, str]:
    """`isolated_env` for the product's own processes (`dagster-daemon`, `dagster dev`, the
    CLI) on a test's folders, with the volume floor and the warning ratio of the gates scaled
    down to small drops with anomalies."""
    return isolated_env(
        {
            "DAGSTER_HOME": str(home),
            "REGIONAL_ETL_LANDING": str(landing),
            "REGIONAL_ETL_WAREHOUSE": str(warehouse),
            "REGIONAL_ETL_GATE_MIN_ROWS": "10",
            "REGIONAL_ETL_GATE_MAX_QUARANTINE_RATIO": "0.5",
            **extra,
        }
    )


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 2.0,
    alive: Callable[[], None] | None = None,
) -> T:
    """Call `probe` until it returns something other than None; E2EError after `timeout` s.

    `alive` is called each round and raises if the product died (no point waiting then).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if alive is not None:
            alive()
        try:
            value = probe()
        except (OSError, E2EError, ValueError) as exc:  # not up yet, or a transient answer
            value, last_error = None, exc
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise E2EError(f"timed out after {timeout:.0f}s waiting for {what}: {last_error!r}")
        time.sleep(interval)


# The local Spark server's supervisor. A run that finds no server starts one in a session of
# its own, on purpose: it outlives the run and serves every other client (other tests' included)
# until it stops itself when idle, so it is never one of a `dagster dev`'s stragglers.
SPARK_SUPERVISOR = "regional_etl.spark.supervisor"


def _descendants(root: int) -> list[psutil.Process]:
    """Every live descendant of `root` but the local Spark server, to kill stragglers that left
    the process group, and only those: a psutil Process is its pid and its start time, so a
    reused pid is not mistaken."""
    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    server: set[psutil.Process] = set()
    for child in children:
        with suppress(psutil.Error):
            if SPARK_SUPERVISOR in child.cmdline():
                server |= {child, *child.children(recursive=True)}
    return [child for child in children if child not in server]


@dataclass
class DagsterDev:
    """One `dagster dev` process group and its GraphQL endpoint."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 150) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"<no log: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise E2EError(f"dagster dev exited with {code}; log tail:\n{self.log_tail()}")

    def graphql(
        self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        """POST one query to /graphql; its `data`, or E2EError with the GraphQL errors."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise E2EError(f"GraphQL errors: {json.dumps(answer['errors'])[:2000]}")
        return answer["data"]

    def server_info(self) -> dict[str, Any] | None:
        with urllib.request.urlopen(f"{self.url}/server_info", timeout=10) as response:
            return json.loads(response.read()) if response.status == 200 else None

    def stop(self, grace: float = 60.0) -> list[int]:
        """Stop the whole process tree (see `stop_tree`)."""
        return stop_tree(self.proc, grace)


class SlowStop(UserWarning):
    """A process tree needed more than SLOW_STOP_SECONDS to stop after SIGTERM. Shown in the
    warnings summary of a passing run on purpose: CI runs lost 120 s to such a stop (both
    graces) without saying which process held it, until this warning named `dagster dev` and
    its children, all ignoring SIGTERM (the cause: DEFAULT_SIGNALS)."""


SLOW_STOP_SECONDS = 10.0


def _described(process: psutil.Process) -> str:
    with suppress(psutil.Error):
        return f"{process.pid} [{process.status()}] {' '.join(process.cmdline())[:160]}"
    return f"{process.pid} (gone)"


def stop_tree(proc: subprocess.Popen[bytes], grace: float = 60.0) -> list[int]:
    """SIGTERM the process group of `proc`, wait, then SIGKILL it; also kill descendants that
    left the group. Returns the pids that survived SIGTERM (for the report), after killing them.
    A stop slower than SLOW_STOP_SECONDS warns (SlowStop) with what was still running."""
    started = time.monotonic()
    stragglers = _descendants(proc.pid)
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid  # the leader is gone; its group id is its pid
    _signal_group(pgid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    leader_s = time.monotonic() - started
    # Give the rest of the group (run workers, JVMs) the same grace to wind down.
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.is_running() for p in stragglers):
        time.sleep(0.5)
    survivors = [p for p in stragglers if p.is_running()]
    took = time.monotonic() - started
    if took > SLOW_STOP_SECONDS:
        leader = "exited" if proc.poll() is not None else "still running"
        warnings.warn(
            SlowStop(
                f"stopping pid {proc.pid} took {took:.0f} s: the leader {leader} after "
                f"{leader_s:.0f} s; still running after the grace: "
                f"{[_described(p) for p in survivors] or 'none'}"
            ),
            stacklevel=2,
        )
    _signal_group(pgid, signal.SIGKILL)
    for process in survivors:
        with suppress(psutil.NoSuchProcess):
            process.kill()  # checks first that the pid is still this process
    if proc.poll() is None:
        proc.wait(timeout=30)
    return [p.pid for p in survivors]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextmanager
def dagster_dev(
    target: str | Path,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    startup_timeout: float = 180,
    daemon: bool = True,
) -> Iterator[DagsterDev]:
    """`dagster dev -m <module> -h 127.0.0.1 -p <free port>` in cwd (`-w <file>` when `target`
    is a workspace file's Path), its own session, until the webserver answers /server_info;
    always stopped as a whole process group on exit. `daemon=False`: `dagster-webserver` alone
    (nothing is launched behind the test's back: no sensor, schedule or automation)."""
    port = free_port()
    code = ["-w", str(target)] if isinstance(target, Path) else ["-m", target]
    webserver = DAGSTER_BIN.with_name("dagster-webserver")
    command = [str(DAGSTER_BIN), "dev"] if daemon else [str(webserver)]
    argv = [*DEFAULT_SIGNALS, *command, *code, "-h", HOST, "-p", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dev = DagsterDev(proc, port, log)
    try:
        wait_for("the webserver's /server_info", dev.server_info, startup_timeout, 2.0,
                 dev.check_alive)  # fmt: skip
        yield dev
    finally:
        survivors = dev.stop()
        if survivors:
            print(f"dagster dev: pids {survivors} outlived SIGTERM and were killed")


@dataclass
class Daemon:
    """One `dagster-daemon run` process group: the webserver-less deployment."""

    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 150) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"<no log: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise E2EError(f"dagster-daemon exited with {code}; log tail:\n{self.log_tail()}")


@contextmanager
def dagster_daemon(
    workspace: Path, cwd: Path, env: Mapping[str, str], log: Path
) -> Iterator[Daemon]:
    """`dagster-daemon run -w <workspace>` in cwd, its own session; always stopped as a whole
    process tree (its code server and run workers included) on exit."""
    argv = [
        *DEFAULT_SIGNALS,
        str(DAGSTER_BIN.with_name("dagster-daemon")),
        "run",
        "-w",
        str(workspace),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Daemon(proc, log)
    finally:
        survivors = stop_tree(proc)
        if survivors:
            print(f"dagster-daemon: pids {survivors} outlived SIGTERM and were killed")


# The backfill's status as the CLI reads it (regional_etl.backfill.STATUS): the same query the
# webserver answers for the UI's Backfills page.
BACKFILL_QUERY = STATUS


def backfill_counts(backfill: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    """asset -> (targeted, materialized, failed) partitions."""
    return {
        "/".join(s["assetKey"]["path"]): (
            s["numPartitionsTargeted"],
            s["numPartitionsMaterialized"],
            s["numPartitionsFailed"],
        )
        for s in backfill["assetBackfillData"]["assetBackfillStatuses"]
    }


WORKSPACE_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""


def loaded_location(dev: DagsterDev, timeout: float = 240.0) -> dict[str, str]:
    """Wait until the code location is loaded; its repository selector."""

    def probe() -> dict[str, str] | None:
        data = dev.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        assert data["__typename"] == "Workspace", data
        entries = data["locationEntries"]
        assert len(entries) == 1, entries
        entry = entries[0]
        loaded = entry["locationOrLoadError"]
        if entry["loadStatus"] != "LOADED" or loaded is None:
            return None
        # A load error is final: fail with its message, not after the timeout.
        assert loaded["__typename"] == "RepositoryLocation", loaded
        (repository,) = loaded["repositories"]
        return {"repositoryLocationName": loaded["name"], "repositoryName": repository["name"]}

    return wait_for("the code location to load", probe, timeout, 3.0, dev.check_alive)


# The materializations and check executions of an asset, as the UI reads them.
MATERIALIZATIONS_QUERY = """
query ($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { assetMaterializations(partitions: $partitions) { partition runId } }
  }
}
"""

CHECK_EXECUTIONS_QUERY = """
query ($key: AssetKeyInput!, $check: String!, $partition: String) {
  assetCheckExecutions(assetKey: $key, checkName: $check, partition: $partition, limit: 5) {
    status partition runId
  }
}
"""
