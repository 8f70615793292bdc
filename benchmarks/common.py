"""What every benchmark shares: sizes, the isolated environment, and running a measured worker.

Each measured workload runs in a fresh Python process (and therefore a fresh JVM), started by
the entry command: that is what a user pays, start-up included, and it lets the entry command
sample the whole process tree's memory (psutil, `procmon.py`) without touching the workload.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from benchmarks.procmon import MemoryPeaks, TreeSampler

if TYPE_CHECKING:
    from regional_etl.checks import QualityGateResource

PROJECT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH_RESULT "
# The pipeline's volume gate needs a floor below the rows a partition publishes, and the
# generator's anomalies quarantine ~14% of the lines (a WARN gate, but keep it green).
MAX_QUARANTINE_RATIO = 0.3


@dataclass(frozen=True)
class Sizes:
    """Everything the quick and full modes differ in."""

    name: str
    start: str  # first date of the backfill
    days: int
    rows: int  # landing lines per (date, region) partition
    files_per_drop: int
    per_partition_dates: int  # dates sampled for (a): each is 1 fx + regional + 1 gold runs
    per_partition_regions: int  # regional runs sampled per date for (a)
    backfill_rounds: int  # (b), (c), (c') run in turn this many times; the best run counts
    gate_rows: int
    gate_files: int
    gate_repeats: int
    scale_factors: tuple[int, ...]
    load_repeats: int
    concurrent_runs: int  # regional runs of one date launched at once (4b)
    bare_regions: int  # regions (c) and (c') process, the contract's first ones
    # A smoke run (quick mode) measures nothing, so it takes short cuts that keep every code
    # path running: the classic-path workers ((a0), (c), (c'), the gate) use the warm Connect
    # server instead of a cold JVM of their own (a minute each on 2 cores); nothing is warmed up
    # before its one timing (the load's validate, the gate's rounds); and the sections run in
    # four lanes instead of one after the other: (u), which mostly waits for the backfill
    # daemon's iterations; (a); the gate then the load, then the references (r) and (d) in
    # whichever of those lanes is free first; (b), (c), (c') and scaling.
    smoke: bool = False

    @property
    def min_rows(self) -> int:
        # Half the lines: comfortably below the ~85% that survive validation and dedup.
        return max(1, self.rows // 2)


FULL = Sizes(
    name="full",
    start="2024-03-01",
    days=30,
    rows=25_000,
    files_per_drop=2,
    per_partition_dates=1,
    per_partition_regions=4,
    backfill_rounds=2,
    gate_rows=1_000_000,
    gate_files=4,
    gate_repeats=4,
    scale_factors=(1, 2, 4),
    load_repeats=5,
    concurrent_runs=4,
    bare_regions=4,
)
# A smoke run of every section (what CI runs): each path once, at the smallest sizes that still
# exercise it (two files per drop, anomalies, two scaling points, two concurrent runs, one region
# for the bare script).
QUICK = Sizes(
    name="quick",
    start="2024-03-01",
    days=1,
    rows=100,
    files_per_drop=2,
    per_partition_dates=1,
    per_partition_regions=1,
    backfill_rounds=1,
    gate_rows=2_000,
    gate_files=2,
    gate_repeats=1,
    scale_factors=(1, 2),
    load_repeats=1,
    concurrent_runs=2,
    # The bare script's loop over regions runs its code once per region: one is enough to smoke
    # it, where four cost the server a minute of CPU.
    bare_regions=1,
    smoke=True,
)
# Set for every worker of a smoke run: `classic_spark.start_session` then opens a session of the
# warm local server instead of starting a JVM.
CLASSIC_ON_SERVER = "BENCHMARK_CLASSIC_ON_SERVER"


def dagster_home(path: Path) -> Path:
    """A throwaway DAGSTER_HOME: SQLite storage inside it, no telemetry, nothing shared."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text(
        "storage:\n"
        "  sqlite:\n"
        f"    base_dir: {path / 'storage'}\n"
        "local_artifact_storage:\n"
        "  module: dagster._core.storage.root\n"
        "  class: LocalArtifactStorage\n"
        "  config:\n"
        f"    base_dir: {path}\n"
        "telemetry:\n"
        "  enabled: false\n"
    )
    return path


def pipeline_env(
    home: Path, landing: Path, warehouse: Path, fx_url: str, min_rows: int
) -> dict[str, str]:
    """Environment of a run process: the code location's own variables, nothing hard-coded."""
    env = dict(os.environ)
    # The developer's shell must not change what is measured.
    for key in list(env):
        if key.startswith(("REGIONAL_ETL_", "SPARK_", "PYSPARK_")) or key == "DAGSTER_HOME":
            del env[key]
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "REGIONAL_ETL_LANDING": str(landing),
            "REGIONAL_ETL_WAREHOUSE": str(warehouse),
            "REGIONAL_ETL_FX_URL": fx_url,
            "REGIONAL_ETL_BREAKER_STORAGE": f"sqlite:///{home / 'breaker.sqlite'}",
            "REGIONAL_ETL_GATE_MIN_ROWS": str(min_rows),
            "REGIONAL_ETL_GATE_MAX_QUARANTINE_RATIO": str(MAX_QUARANTINE_RATIO),
            "PYTHONWARNINGS": "ignore",
        }
    )
    # Kept from the shell: where set-up put the Delta jars, and where the local Spark Connect
    # server publishes its state (the runs must find the server the entry command warmed up).
    for key in ("REGIONAL_ETL_JARS_DIR", "REGIONAL_ETL_SPARK_STATE_DIR"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


@dataclass
class Measured:
    """One measured process: wall time from spawn to exit, its memory peaks, its output."""

    wall_s: float
    returncode: int
    memory: MemoryPeaks
    result: dict[str, Any]
    log: Path
    # Seconds its children (the JVM) lived on after it exited; not part of wall_s.
    lingered_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "lingered_s": self.lingered_s,
            "returncode": self.returncode,
            "memory": self.memory.to_json(),
            "result": self.result,
            "log": str(self.log),
        }


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """End the process group a measured process leads (itself, a JVM, Python workers): SIGTERM,
    then SIGKILL after `grace`. A no-op when the whole group is already gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; others of its group (a JVM) may still be shutting down.
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def spawn(argv: list[str], env: dict[str, str], out: IO[bytes], cwd: Path) -> subprocess.Popen:
    """Start a measured process as the leader of its own process group, so that it, its JVM and
    its Python workers can be stopped together whatever happens to the benchmark."""
    return subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def read_result(log: Path) -> dict[str, Any]:
    """A worker's `BENCH_RESULT {json}` line, the last one in its log ({} if none)."""
    result: dict[str, Any] = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
    return result


def run_measured(
    argv: list[str],
    env: dict[str, str],
    log: Path,
    cwd: Path,
    timeout: float = 7200,
    shared: tuple[int, ...] = (),
) -> Measured:
    """Run one process to completion, sampling its tree's RSS; its stdout/stderr go to `log`.

    Returns when its whole tree is gone, so that a JVM still shutting down does not slow the next
    measurement; the wall time stops when the process itself exits (when the user gets control).
    `shared` processes (the Spark Connect server's JVM) are sampled along with it: their memory
    and the CPU time they spend meanwhile are the run's too.

    A worker reports its own numbers on a last `BENCH_RESULT {json}` line of stdout.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = spawn(argv, env, out, cwd)
        try:
            with TreeSampler(proc.pid, shared=shared) as sampler:
                try:
                    returncode = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    stop_group(proc)
                    returncode = proc.wait()
                wall = time.perf_counter() - started
                lingered = sampler.wait_for_tree()
        finally:
            stop_group(proc)  # anything of its group still alive (normally nothing)
    return Measured(wall, returncode, sampler.peaks, read_result(log), log, round(lingered, 2))


def quality_gates() -> QualityGateResource:
    """The gate thresholds a run process of `pipeline_env` uses, for a worker without Dagster."""
    from regional_etl.resources.environments import quality_gates

    # Outside a run nothing resolves the EnvVar fields: resolve them here.
    return quality_gates().process_config_and_initialize()


def python_module(module: str, *args: str) -> list[str]:
    """argv for `python -m module args` with this interpreter (the project's virtualenv)."""
    return [sys.executable, "-m", module, *args]


def worker_argv(
    module: str, landing: Path, warehouse: Path, start: str, end: str, *extra: str
) -> list[str]:
    """argv of a benchmark worker: every worker takes the landing, its warehouse and the range."""
    return python_module(
        module,
        *("--landing", str(landing), "--warehouse", str(warehouse)),
        *("--start", start, "--end", end),
        *extra,
    )


def emit(result: dict[str, Any]) -> None:
    """A worker's last word: its numbers, on one line the entry command looks for."""
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)


def landing_lines(landing: Path) -> int:
    """Lines under a landing root as the contract counts them (what bronze must hold)."""
    total = 0
    for path in landing.rglob("*.jsonl"):
        data = path.read_bytes()
        if data:
            total += data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    return total


def delta_files(table: Path) -> dict[str, float | int]:
    """Data files of a Delta table folder and their average size: the small-files signal.

    Counts every parquet file on disk (the benchmark's tables are written once, so nothing is
    unreferenced yet), and the partition folders that hold them.
    """
    files = [p for p in table.rglob("*.parquet") if "_delta_log" not in p.parts]
    folders = {p.parent for p in files}
    size = sum(p.stat().st_size for p in files)
    return {
        "files": len(files),
        "partitions": len(folders),
        "files_per_partition": round(len(files) / len(folders), 2) if folders else 0,
        "avg_file_kib": round(size / len(files) / 1024, 1) if files else 0,
    }
