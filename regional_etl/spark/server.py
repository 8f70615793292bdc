"""The local Spark Connect server: one warm Spark with Delta per user, shared by every client.

Every Dagster run, the CLI, the tests and the benchmarks are thin Spark Connect clients; only this
server runs a JVM. It is found through a state file in the user's cache folder (so every
`DAGSTER_HOME` and every checkout of one user share it), started detached by the first client
that finds none, and stops itself after `REGIONAL_ETL_SPARK_IDLE_MINUTES` without a client.

A small Python supervisor (`supervisor.py`) owns the JVM: it writes the state file once the
server answers, counts the clients connected to the gRPC port (Spark Connect has no session API
outside the JVM), and stops the JVM when idle or when asked. The JVM is the supervisor's child in
the supervisor's own session, so `stop` can end the whole process group. This module is the
clients' side: find the server, start it, stop it, describe it.

Delta over Connect: the Delta SQL extension and catalog are loaded into the server, so SQL
(`CREATE TABLE IF NOT EXISTS delta.`path``, `DESCRIBE HISTORY`) and DataFrame writes with
`replaceWhere` work. The Python `DeltaTable` API would need the Delta Connect server plugin,
which Maven Central does not serve for this Spark line: the package uses SQL only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import psutil
from filelock import FileLock

from regional_etl import settings

STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
LOG_FILE = "server.log"
# Touched by every client before it connects: the supervisor never stops a server that a client
# has just chosen, even if that client has not opened its connection yet.
LEASE_FILE = "client.lease"
# Spark's block-manager, shuffle and temporary files, one folder per supervisor pid. A JVM that is
# SIGKILLed (out of memory, a lost container) never deletes its folders; in the system /tmp they
# would pile up for good, here the next supervisor removes those of dead ones.
SCRATCH_DIR = "scratch"
START_TIMEOUT_SECONDS = 180.0

# Static settings of the server JVM. Per-session SQL settings (shuffle partitions, time zone)
# are the clients' own: see `resource.py`.
SERVER_CONF: dict[str, str] = {
    "spark.master": "local[*]",
    "spark.app.name": "regional-etl-spark-connect",
    # Loopback only: otherwise Spark binds the driver to the machine's outside address.
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.connect.grpc.binding.address": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.log.level": "WARN",
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.databricks.delta.snapshotPartitions": "2",
    # A long-lived JVM keeps every heap page it ever committed: after one big backfill the idle
    # server would hold its whole heap beside the runs for the rest of the day. A periodic
    # G1 cycle when idle gives back what the live data does not need.
    # The server runs many short queries, each through a wide spread of Spark and Delta code:
    # with the JIT's default thresholds its optimizing compiler (C2) compiles much of that spread
    # in the first minutes, on the cores the queries need. Four times the calls before C2 (a
    # method with loops: 25,000 calls and iterations, not 15,000) keeps it to the code that
    # stays hot; the rest runs compiled by C1. Measured in benchmarks/README.md (JIT thresholds).
    "spark.driver.extraJavaOptions": (
        "-XX:+UseG1GC -XX:G1PeriodicGCInterval=30000 -XX:MinHeapFreeRatio=10 "
        "-XX:MaxHeapFreeRatio=30 "
        "-XX:Tier4InvocationThreshold=20000 -XX:Tier4MinInvocationThreshold=2400 "
        "-XX:Tier4CompileThreshold=25000"
    ),
}


class SparkServerError(RuntimeError):
    """The local Spark Connect server could not be started or reached."""


@dataclass(frozen=True)
class ServerState:
    """What the supervisor publishes once the server answers."""

    server_id: str
    url: str
    port: int
    supervisor_pid: int
    jvm_pid: int
    started_at: float
    idle_minutes: float
    log: str

    def alive(self) -> bool:
        # The command line too: after a reboot the pids of a stale state file may be others'.
        return pid_alive(self.supervisor_pid) and any(
            "SparkConnectServer" in arg for arg in _cmdline(self.jvm_pid)
        )

    def connected_clients(self) -> int:
        """Established TCP connections to the server's port (each Spark Connect client holds
        one), as the server JVM sees them."""
        try:
            connections = psutil.Process(self.jvm_pid).net_connections(kind="tcp")
        except psutil.Error:
            return 0  # gone, or not ours to look at
        return sum(
            1
            for c in connections
            if c.laddr and c.laddr.port == self.port and c.status == psutil.CONN_ESTABLISHED
        )


def state_dir() -> Path:
    configured = settings.SPARK_STATE_DIR.get()
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(
        settings.XDG_CACHE_HOME.get() or "~/.cache", "regional-etl", "spark-connect"
    ).expanduser()


def read_state(directory: Path | None = None) -> ServerState | None:
    """The running server's state, or None when there is none (or only a stale file)."""
    path = (directory or state_dir()) / STATE_FILE
    try:
        state = ServerState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return state if state.alive() else None


def ensure_running() -> ServerState:
    """The live local server, started (once, under a file lock) if there is none."""
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    # Under the lock the idle supervisor takes too: a server this returns is not being stopped.
    with start_lock(directory):
        state = read_state(directory) or _start(directory)
        (directory / LEASE_FILE).touch()
        return state


def stop(timeout: float = 30.0) -> ServerState | None:
    """Stop the local server (and its whole process group); the state it had, or None."""
    directory = state_dir()
    state = read_state(directory)
    if state is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and state.alive():
        time.sleep(0.2)
    if state.alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(state.supervisor_pid, signal.SIGKILL)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return state


def resident_bytes(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def describe(state: ServerState) -> dict[str, object]:
    """What `regional-etl spark-server status` prints."""
    return {
        "url": state.url,
        "pid": state.jvm_pid,
        "supervisor_pid": state.supervisor_pid,
        "uptime_seconds": round(time.time() - state.started_at),
        "memory_mib": round(resident_bytes(state.jvm_pid) / 2**20),
        "sessions": state.connected_clients(),
        "idle_minutes": state.idle_minutes,
        "log": state.log,
    }


def server_command(port: int, master: str = "local[*]", scratch: Path | None = None) -> list[str]:
    """The spark-submit command line of a Connect server with the Delta jars from set-up.

    `master` other than local runs the same server as the driver of a cluster (for example a
    standalone `spark://host:port`); `--jars` then also ships the Delta jars to the executors.
    """
    from regional_etl.spark.jars import resolved_jars

    conf = {
        **SERVER_CONF,
        "spark.master": master,
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.memory": settings.SPARK_DRIVER_MEMORY.get() or "2g",
        **_extra_conf(),
    }
    if scratch:
        conf["spark.local.dir"] = str(scratch)
        # The JVM's own temporary files (Spark's spark-* folders, native libraries) too.
        conf["spark.driver.extraJavaOptions"] += f" -Djava.io.tmpdir={shlex.quote(str(scratch))}"
    command = [
        str(spark_home() / "bin" / "spark-submit"),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--jars",
        ",".join(resolved_jars()),
    ]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    return [*command, "spark-internal"]


def spark_home() -> Path:
    """The pyspark wheel is a Spark distribution (jars and bin/), including the Connect server."""
    spec = find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise SparkServerError("pyspark is not installed: run scripts/setup.sh")
    return Path(spec.origin).parent


def _extra_conf() -> dict[str, str]:
    raw = settings.SPARK_CONF.get() or ""
    pairs = [item.split("=", 1) for item in raw.split(",") if item.strip()]
    if any(len(p) != 2 for p in pairs):
        raise SparkServerError(f"{settings.SPARK_CONF.name}: expected k1=v1,k2=v2, got {raw!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def _start(directory: Path) -> ServerState:
    """Start the supervisor detached and wait until it publishes the server's state."""
    (directory / STATE_FILE).unlink(missing_ok=True)
    server_command(0)  # fail here, in the client, when set-up was not run
    log = directory / LOG_FILE
    with open(log, "wb") as out:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "regional_etl.spark.supervisor"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=directory,
            # Its own session: the server outlives the run that started it, and a signal to
            # that run's process group (dagster dev stopping) does not reach it.
            start_new_session=True,
            env=settings.environment(**{settings.SPARK_STATE_DIR.name: str(directory)}),
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        state = read_state(directory)
        if state is not None:
            return state
        if supervisor.poll() is not None:
            raise SparkServerError(
                f"the local Spark Connect server did not start (exit {supervisor.returncode}); "
                f"last lines of {log}:\n{_tail(log)}"
            )
        time.sleep(0.25)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(supervisor.pid, signal.SIGKILL)
    raise SparkServerError(
        f"the local Spark Connect server did not answer within {START_TIMEOUT_SECONDS:.0f} s; "
        f"see {log}:\n{_tail(log)}"
    )


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, exited but not reaped, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # another user's: it exists


def _cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []  # gone, a zombie, or not ours to read


def start_lock(directory: Path) -> FileLock:
    """Held by a client while it picks or starts the server and touches the lease, and by the
    supervisor while it decides to stop idle: never both at once."""
    return FileLock(directory / LOCK_FILE)


def lease_time(directory: Path) -> float:
    """When a client last chose this server (0 when none has)."""
    try:
        return (directory / LEASE_FILE).stat().st_mtime
    except OSError:
        return 0.0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
