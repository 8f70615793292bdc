"""The local Spark Connect server's life: one server for clients that start together, a restart
after it dies, the idle stop and the CLI, on a server of this test's own (never the shared one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import Failure

from regional_etl.spark import server as spark_server
from regional_etl.spark.resource import SparkResource
from regional_etl_tests.conftest import SHORT_LIVED_SERVER_CONF
from regional_etl_tests.procs import process_groups

pytestmark = pytest.mark.slow

CLIENT = textwrap.dedent(
    """
    from regional_etl.spark import server as spark_server
    print(spark_server.ensure_running().server_id)
    """
)


@pytest.fixture
def own_server_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state folder of this test's own; whatever server it gets is stopped at the end."""
    directory = tmp_path / "spark-connect"
    monkeypatch.setenv("REGIONAL_ETL_SPARK_STATE_DIR", str(directory))
    monkeypatch.setenv("REGIONAL_ETL_SPARK_IDLE_MINUTES", "0.5")
    monkeypatch.setenv("REGIONAL_ETL_SPARK_DRIVER_MEMORY", "512m")
    monkeypatch.setenv("REGIONAL_ETL_SPARK_CONF", SHORT_LIVED_SERVER_CONF)
    yield directory
    state = spark_server.stop()
    if state is not None:
        assert not any(map(spark_server.pid_alive, (state.jvm_pid, state.supervisor_pid)))


# The server this test kills leaves a Connect client behind: besides the call that the
# `pytest.warns` below checks, the client releases the dead server's executions (in background
# threads) and session, which give up the same way (RETRIES_EXCEEDED).
@pytest.mark.filterwarnings(r"ignore:\[RETRIES_EXCEEDED\]:UserWarning")
def test_clients_starting_together_share_one_server_that_restarts_after_dying_and_stops_idle(
    own_server_dir: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # What a supervisor killed with its JVM leaves: a scratch folder under a pid now dead.
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = own_server_dir / spark_server.SCRATCH_DIR / str(gone.pid) / "blockmgr-0"
    left.mkdir(parents=True)
    client = [sys.executable, "-c", CLIENT]
    with process_groups(
        client, client, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as clients:
        outputs = [c.communicate(timeout=240) for c in clients]
    assert [c.returncode for c in clients] == [0, 0], outputs
    ids = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(ids) == 1, outputs  # the start lock: one server for both
    first = spark_server.read_state()
    assert first is not None and first.server_id in ids
    assert first.url.startswith("sc://127.0.0.1:")
    assert not left.parent.exists()  # removed by the new supervisor

    status = subprocess.run(
        [sys.executable, "-m", "regional_etl.cli", "spark-server", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    for field in ("url", "pid", "uptime_seconds", "memory_mib", "sessions"):
        assert field in status.stdout
    assert first.url in status.stdout and str(first.jvm_pid) in status.stdout

    # A server that dies under a client: the guard says so, the next session gets a new one.
    resource = SparkResource(connect_retries=1)
    session = resource.spark_session
    assert session.range(5).count() == 5
    os.kill(first.jvm_pid, signal.SIGKILL)
    _wait_for(lambda: spark_server.read_state() is None, 30, "the supervisor noticing")
    # The Connect client retries the dead server, then warns RETRIES_EXCEEDED (pyspark's own
    # UserWarning, whatever the caller does next) and raises; the guard turns that into a
    # Failure that says what happened.
    with (
        pytest.warns(UserWarning, match=r"^\[RETRIES_EXCEEDED\]"),
        pytest.raises(Failure, match="lost the connection"),
        resource.connection_errors(),
    ):
        session.range(5).count()
    # The dead server's session released now (it gives up the same way), not at the exit.
    session.stop()
    assert resource.spark_session.range(7).count() == 7  # started again, on first use
    second = spark_server.read_state()
    assert second is not None and second.server_id != first.server_id

    # Idle: with no client left, the server stops itself (30 s here, polled every 5 s).
    resource.spark_session.stop()
    _wait_for(lambda: spark_server.read_state() is None, 120, "the idle stop")
    # Each supervisor removes its scratch folder as it ends, after its JVM.
    processes = (second.jvm_pid, first.supervisor_pid, second.supervisor_pid)
    _wait_for(
        lambda: not any(map(spark_server.pid_alive, processes)),
        30,
        "the JVM and both supervisors exiting",
    )
    assert "idle for" in (own_server_dir / spark_server.LOG_FILE).read_text()
    # Both servers' block-manager folders went with them, the SIGKILLed JVM's too.
    assert not list((own_server_dir / spark_server.SCRATCH_DIR).iterdir())


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")
