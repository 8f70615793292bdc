"""The local Spark Connect server: one warm Spark with Delta per user, shared by every client.

Every Dagster run, the CLI, the tests and the benchmarks are thin Spark Connect clients; only this
server runs a JVM. It is found through a state file in the user's cache folder (so every
`DAGSTER_HOME` and every checkout of one user share it), started detached by the first client
that finds none, and stops itself after `REGIONAL_ETL_SPARK_IDLE_MINUTES` without a client.

A small Python supervisor owns the JVM: it writes the state file once the server answers, counts
the clients connected to the gRPC port (Spark Connect has no session API outside the JVM), and
stops the JVM when idle or when asked. The JVM is the supervisor's child in the supervisor's own
session, so `stop` can end the whole process group.

Delta over Connect: the Delta SQL extension and catalog are loaded into the server, so SQL
(`CREATE TABLE IF NOT EXISTS delta.`path``, `DESCRIBE HISTORY`) and DataFrame writes with
`replaceWhere` work. The Python `DeltaTable` API would need the Delta Connect server plugin,
which Maven Central does not serve for this Spark line: the package uses SQL only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path

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
POLL_SECONDS = 5.0

# Static settings of the server JVM. Per-session SQL settings (shuffle partitions, time zone)
# are the clients' own: see `resources/spark.py`.
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
    "spark.driver.extraJavaOptions": (
        "-XX:+UseG1GC -XX:G1PeriodicGCInterval=30000 -XX:MinHeapFreeRatio=10 "
        "-XX:MaxHeapFreeRatio=30"
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
        return pid_alive(self.supervisor_pid) and b"SparkConnectServer" in _cmdline(self.jvm_pid)


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
    with _locked(directory):
        state = read_state(directory) or _start(directory)
        _touch_lease(directory)
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


def connected_clients(port: int) -> int:
    """Established TCP connections to the server's port (each Spark Connect client holds one)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                    count += 1
    return count


def resident_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def describe(state: ServerState) -> dict[str, object]:
    """What `regional-etl spark-server status` prints."""
    return {
        "url": state.url,
        "pid": state.jvm_pid,
        "supervisor_pid": state.supervisor_pid,
        "uptime_seconds": round(time.time() - state.started_at),
        "memory_mib": round(resident_bytes(state.jvm_pid) / 2**20),
        "sessions": connected_clients(state.port),
        "idle_minutes": state.idle_minutes,
        "log": state.log,
    }


def server_command(port: int, master: str = "local[*]", scratch: Path | None = None) -> list[str]:
    """The spark-submit command line of a Connect server with the Delta jars from set-up.

    `master` other than local runs the same server as the driver of a cluster (for example a
    standalone `spark://host:port`); `--jars` then also ships the Delta jars to the executors.
    """
    from regional_etl.jars import resolved_jars

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
            [sys.executable, "-m", "regional_etl.spark_server"],
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


def supervise(directory: Path) -> int:
    """Run the server JVM, publish its state, stop it when idle or on SIGTERM (the supervisor)."""
    port = _free_port()
    idle_minutes = float(settings.SPARK_IDLE_MINUTES.get() or "30")
    env = settings.environment(SPARK_HOME=str(spark_home()))
    # glibc gives every JVM thread that allocates natively its own 64 MiB arena; two are plenty.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    scratch = _fresh_scratch(directory)
    jvm = subprocess.Popen(
        server_command(port, scratch=scratch), stdin=subprocess.DEVNULL, cwd=directory, env=env
    )
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    state_path = directory / STATE_FILE
    try:
        while not _answers(port):
            if jvm.poll() is not None or stopping:
                print(f"spark-submit exited with {jvm.returncode} before listening", flush=True)
                return 1
            time.sleep(0.25)
        state = ServerState(
            server_id=uuid.uuid4().hex,
            url=f"sc://127.0.0.1:{port}",
            port=port,
            supervisor_pid=os.getpid(),
            jvm_pid=jvm.pid,
            started_at=time.time(),
            idle_minutes=idle_minutes,
            log=str(directory / LOG_FILE),
        )
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(state_path)
        print(f"Spark Connect server listening at {state.url} (pid {jvm.pid})", flush=True)
        last_active = time.time()
        while not stopping and jvm.poll() is None:
            time.sleep(POLL_SECONDS)
            if connected_clients(port):
                last_active = time.time()
            idle_seconds = idle_minutes * 60
            if time.time() - max(last_active, _lease_time(directory)) > idle_seconds:
                # Re-checked under the lock that starting clients hold while they touch the
                # lease: none can pick this server between the check and the state's removal.
                with _locked(directory):
                    idle = time.time() - _lease_time(directory) > idle_seconds
                    if idle and not connected_clients(port):
                        print(f"idle for {idle_minutes:g} min: stopping", flush=True)
                        state_path.unlink(missing_ok=True)
                        break
        if jvm.poll() is not None and not stopping:
            print(f"the server JVM exited with {jvm.returncode}", flush=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            current = json.loads(state_path.read_text())
            if current.get("supervisor_pid") == os.getpid():
                state_path.unlink()
        _terminate(jvm)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _fresh_scratch(directory: Path) -> Path:
    """This supervisor's scratch folder, after removing those of supervisors that are gone."""
    root = directory / SCRATCH_DIR
    root.mkdir(exist_ok=True)
    scratch = root / str(os.getpid())
    for folder in root.iterdir():
        if folder == scratch or not (folder.name.isdigit() and pid_alive(int(folder.name))):
            shutil.rmtree(folder, ignore_errors=True)
    scratch.mkdir()
    return scratch


def _terminate(process: subprocess.Popen, grace: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() if pid_alive(pid) else b""
    except OSError:
        return b""


def _touch_lease(directory: Path) -> None:
    (directory / LEASE_FILE).touch()


def _lease_time(directory: Path) -> float:
    try:
        return (directory / LEASE_FILE).stat().st_mtime
    except OSError:
        return 0.0


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


if __name__ == "__main__":
    sys.exit(supervise(state_dir()))
