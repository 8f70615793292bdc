"""The supervisor of the local Spark Connect server: the process that owns the server's JVM.

Started detached by the first client that finds no server (`server.ensure_running`), it picks a
free loopback port, starts the JVM, publishes the state file once the server answers, and stops
the JVM when no client has used it for `REGIONAL_ETL_SPARK_IDLE_MINUTES` or on SIGTERM
(`server.stop`). `python -m regional_etl.spark.supervisor` is its command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from regional_etl import settings
from regional_etl.io.files import atomic_write
from regional_etl.spark.server import (
    LOG_FILE,
    SCRATCH_DIR,
    STATE_FILE,
    ServerState,
    lease_time,
    pid_alive,
    server_command,
    spark_home,
    start_lock,
    state_dir,
)

POLL_SECONDS = 5.0


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
        atomic_write(state_path, json.dumps(asdict(state), indent=2))
        print(f"Spark Connect server listening at {state.url} (pid {jvm.pid})", flush=True)
        last_active = time.time()
        while not stopping and jvm.poll() is None:
            time.sleep(POLL_SECONDS)
            if state.connected_clients():
                last_active = time.time()
            idle_seconds = idle_minutes * 60
            if time.time() - max(last_active, lease_time(directory)) > idle_seconds:
                # Re-checked under the lock that starting clients hold while they touch the
                # lease: none can pick this server between the check and the state's removal.
                with start_lock(directory):
                    idle = time.time() - lease_time(directory) > idle_seconds
                    if idle and not state.connected_clients():
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
    # The server's own pick: the gRPC port is published in the state file, never configured.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(supervise(state_dir()))
