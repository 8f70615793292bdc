"""Scenario 3, crash safety: a run process SIGKILLed while its Delta write is in flight (bronze,
silver, gold), and separately the Spark Connect server's JVM SIGKILLed mid-write. The table is
at its previous version or the new one, never a mix; a re-run heals; the gates pass; the data
files the killed write left behind are counted and removed by VACUUM.

The scenarios on one landed and backfilled date share it (`crash_site`, set up once for the
module): each one heals what it breaks, and `landed` checks that the warehouse is whole again
(as the previous scenario's last judge found it, or judged anew) before handing it to the next.
The Spark server kills share one server state folder of their own, so each kill lands on the
server the previous scenario's retry started."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
    instance_for_test,
    materialize,
)

from regional_etl.assets.reference import fx_rates
from regional_etl.backfill import run_backfill
from regional_etl.contract import REGIONS
from regional_etl.fx.server import FXServer
from regional_etl.generate import generate_landing
from regional_etl.spark import server as spark_server
from regional_etl_tests.conftest import SHORT_LIVED_SERVER_CONF, Pipeline, build_pipeline
from regional_etl_tests.e2e_support import dagster_daemon, product_env, wait_for
from regional_etl_tests.procs import process_groups
from regional_etl_tests.reliability.conftest import (
    TABLES,
    Verdict,
    judge,
    launcher_argv,
    launcher_env,
)

REPO = Path(__file__).resolve().parents[2]
DATE = "2024-03-08"
# Lines per drop. A write is caught in flight between its first data file and its commit (the
# tests look every 5 or 10 ms): that window is mostly the fixed cost of a Delta commit, 50 to
# 400 ms measured at 1,000 lines as at 3,000, so more lines would only cost CPU.
ROWS = 1000
# Where each kill lands: the job of the run and the table whose write is watched.
KILL_POINTS = [
    ("ingest", "regional_orders_job", f"{DATE}|eu-west", "bronze/raw_orders"),
    ("silver write", "regional_orders_job", f"{DATE}|eu-west", "silver/orders"),
    ("gold write", "daily_revenue_job", DATE, "gold/daily_revenue"),
]
# The session's settings for the VACUUM of the killed writes' files, reset afterwards.
VACUUM_CONF = {
    "spark.databricks.delta.retentionDurationCheck.enabled": "false",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
}


def _data_files(table: Path) -> set[str]:
    # Checkpoints are Parquet too, but live in the log and are no commit's data.
    return {
        str(p.relative_to(table))
        for p in table.rglob("*.parquet")
        if "_delta_log" not in p.relative_to(table).parts
    }


def _version(table: Path) -> int:
    return max(int(p.stem) for p in (table / "_delta_log").glob("*.json"))


def _logged_files(table: Path) -> set[str]:
    """Every data file any commit of the table ever added (removed ones included)."""
    added = set()
    for commit in (table / "_delta_log").glob("*.json"):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                added.add(unquote(action["add"]["path"]))
    return added


def orphans(table: Path) -> int:
    """Data files on disk that no commit references: what a killed write leaves behind."""
    return len({unquote(f) for f in _data_files(table)} - _logged_files(table))


def _kill_when_in_flight(proc: subprocess.Popen, table: Path, kill, timeout: float) -> bool:
    """Call `kill` once a new data file of `table` exists and its log has no new commit yet
    (the write is in flight); True if it was caught so, False if the commit came first."""
    files, version = _data_files(table), _version(table)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _data_files(table) - files:
            in_flight = _version(table) == version
            kill()
            return in_flight
        time.sleep(0.005)
    raise AssertionError(f"no write to {table} seen (run exit {proc.poll()})")


def _settle(table: Path, before: int, quiet: float = 3.0) -> None:
    """Wait until the killed write is over: the server may still finish it. Its commit is the
    only one that can come (the killed run sends nothing more), so the wait ends when the log
    moves past `before`, or once it stayed still for `quiet` s (the server dropped the write)."""
    deadline = time.monotonic() + quiet
    while time.monotonic() < deadline and _version(table) == before:
        time.sleep(0.05)


def _single_writer_per_partition(spark, table: Path) -> bool:
    """Every (date, region) holds the rows of one run (gold, without run ids, is judged against
    the oracle instead)."""
    frame = spark.read.format("delta").load(str(table))
    if "run_id" not in frame.columns:
        return True
    writers = defaultdict(set)
    for row in frame.select("order_date", "region", "run_id").distinct().collect():
        writers[(row["order_date"], row["region"])].add(row["run_id"])
    return all(len(ids) == 1 for ids in writers.values())


# The crash site's table versions when a judge last found the date whole: where the next
# scenario starts, so `landed` need not judge the same tables again.
_WHOLE_AT: dict[Path, dict[str, int]] = {}


def _versions(warehouse: Path) -> dict[str, int]:
    return {t: _version(warehouse / t) for t in TABLES if (warehouse / t / "_delta_log").exists()}


def _judge_date(spark, pipeline: Pipeline) -> Verdict:
    """The date's four regions against the oracle. When they are whole and no commit landed
    meanwhile, the tables' versions are noted: a Delta version's content never changes, nor
    does the crash site's landing zone."""
    versions = _versions(pipeline.warehouse)
    verdict = judge(spark, pipeline.landing, pipeline.warehouse, [(DATE, r) for r in REGIONS])
    if verdict.ok and _versions(pipeline.warehouse) == versions:
        _WHOLE_AT[pipeline.warehouse] = versions
    return verdict


def _rerun(pipeline: Pipeline, instance: DagsterInstance, job: str, partition: str) -> None:
    result = pipeline.defs.resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=partition
    )
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())


@pytest.fixture(scope="module")
def crash_site(
    tmp_path_factory: pytest.TempPathFactory, spark, pipeline_fx_server: FXServer
) -> Iterator[tuple[Pipeline, DagsterInstance]]:
    """One date landed and backfilled on one instance, for every scenario of the module."""
    pipeline = build_pipeline(tmp_path_factory.mktemp("crash"), pipeline_fx_server.url)
    day = dt.date.fromisoformat(DATE)
    generate_landing(pipeline.landing, day, day, rows=ROWS, seed=8, anomalies=True)
    with instance_for_test() as instance:
        assert run_backfill(pipeline.defs, instance, DATE, DATE, progress=lambda _: None).ok
        yield pipeline, instance


@pytest.fixture
def instance(crash_site: tuple[Pipeline, DagsterInstance]) -> DagsterInstance:
    """The crash site's instance (it holds the set-up's runs)."""
    return crash_site[1]


@pytest.fixture
def landed(crash_site: tuple[Pipeline, DagsterInstance], spark) -> Pipeline:
    """The crash site, whole: every scenario starts from the oracle's tables (judged here
    unless the previous scenario's last judge found them whole at their current versions). A
    scenario that failed before its re-run healed them leaves them for a backfill to repair."""
    pipeline, instance = crash_site
    if _WHOLE_AT.get(pipeline.warehouse) == _versions(pipeline.warehouse):
        return pipeline
    if not _judge_date(spark, pipeline).ok:
        assert run_backfill(pipeline.defs, instance, DATE, DATE, progress=lambda _: None).ok
        assert _judge_date(spark, pipeline).ok
    return pipeline


@pytest.mark.slow
def test_a_run_killed_mid_write_leaves_old_or_new_and_the_rerun_heals(
    landed: Pipeline, instance: DagsterInstance, spark, pipeline_fx_server: FXServer
) -> None:
    for point, job, partition, name in KILL_POINTS:
        table = landed.warehouse / name
        before = _version(table)
        argv = launcher_argv(landed, pipeline_fx_server.url, job, partition)
        with process_groups(argv, env=launcher_env(Path(instance.root_directory))) as [proc]:
            mid_write = _kill_when_in_flight(
                proc, table, lambda p=proc: os.killpg(p.pid, signal.SIGKILL), timeout=600
            )
            proc.wait(60)
        _settle(table, before)
        after = _version(table)
        # Old or new, never a mix: each partition holds the complete rows of one run.
        verdict = _judge_date(spark, landed)
        single = _single_writer_per_partition(spark, table)
        left = orphans(table)
        _rerun(landed, instance, job, partition)
        healed = _judge_date(spark, landed)
        print(
            f"\n[reliability] crash: run SIGKILL during {point}: mid_write={mid_write} "
            f"version {before}->{after} single_writer={single} orphan_files={left} "
            f"after_kill[{verdict.summary()}] after_rerun[{healed.summary()}]"
        )
        assert verdict.ok and single, verdict.mismatches
        assert healed.ok, healed.mismatches

    # The files of killed writes go with VACUUM once past retention (here: zero hours). VACUUM
    # spreads its listing of a table's folders over as many tasks as Spark's partition discovery
    # parallelism: its default, 10,000, cost the server a minute of CPU per table this small.
    total = sum(orphans(landed.warehouse / name) for *_, name in KILL_POINTS)
    for key, value in VACUUM_CONF.items():
        spark.conf.set(key, value)
    try:
        for *_, name in KILL_POINTS:
            spark.sql(f"VACUUM delta.`{landed.warehouse / name}` RETAIN 0 HOURS")
    finally:
        for key in VACUUM_CONF:
            spark.conf.unset(key)
    left = sum(orphans(landed.warehouse / name) for *_, name in KILL_POINTS)
    print(f"[reliability] crash: orphan files before VACUUM={total} after={left}")
    assert left == 0
    assert _judge_date(spark, landed).ok


@pytest.fixture(scope="module")
def own_server_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The state folder of a Spark server of this module's own (the shared one serves other
    sessions right now), kept across the server kills. At the end its last server is stopped,
    and no scratch folder of any of its servers may be left."""
    state = tmp_path_factory.mktemp("spark-state")
    yield state
    _stop_server(state)
    # `_stop_server` returns once the JVM is gone (the server may also be stopping on its own,
    # idle since the last kill); each supervisor removes its scratch folder (named by its pid)
    # after its JVM, so the folders are judged once their supervisors have exited.
    scratch = state / spark_server.SCRATCH_DIR
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
        spark_server.pid_alive(int(p.name)) for p in scratch.glob("*") if p.name.isdigit()
    ):
        time.sleep(0.5)
    assert not scratch.exists() or not list(scratch.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize(("point", "job", "partition", "name"), KILL_POINTS)
def test_the_spark_server_killed_mid_write_heals_within_the_run(
    point: str,
    job: str,
    partition: str,
    name: str,
    landed: Pipeline,
    instance: DagsterInstance,
    spark,
    pipeline_fx_server: FXServer,
    own_server_state: Path,
) -> None:
    """The run reaches the write on the server the previous kill's retry started (the first
    one starts its own); the server is killed, and the step's retry starts another."""
    state = own_server_state
    env = launcher_env(
        Path(instance.root_directory),
        REGIONAL_ETL_SPARK_STATE_DIR=str(state),
        REGIONAL_ETL_SPARK_DRIVER_MEMORY="768m",
        REGIONAL_ETL_SPARK_IDLE_MINUTES="2",
        REGIONAL_ETL_SPARK_CONF=SHORT_LIVED_SERVER_CONF,
        # The failed step (raw_orders or orders) is retried after half a second instead of the
        # product's 2 s or 20 s (orders waits for an FX run there): the retry starts a new
        # server, that is wait enough. Gold's retry policy has a fixed delay of 5 s.
        REGIONAL_ETL_LANDING_STEP_RETRY_DELAY_SECONDS="0.5",
        REGIONAL_ETL_UPSTREAM_STEP_RETRY_DELAY_SECONDS="0.5",
    )
    table = landed.warehouse / name
    before = _version(table)
    killed: list[spark_server.ServerState] = []

    def kill_jvm() -> None:
        current = spark_server.read_state(state)
        assert current is not None
        os.kill(current.jvm_pid, signal.SIGKILL)
        killed.append(current)

    # The run's Spark client gives up on the killed server after two quick retries instead of
    # five over 15 s: once when the write breaks (then the step's retry takes over), and once
    # more at the run process's exit, when pyspark cleans up after every session it opened.
    argv = launcher_argv(landed, pipeline_fx_server.url, job, partition, connect_retries=2)
    with process_groups(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as [proc]:
        mid_write = _kill_when_in_flight(proc, table, kill_jvm, timeout=600)
        out, err = proc.communicate(timeout=900)
    outcome = json.loads(out.strip().splitlines()[-1])
    run = instance.get_run_by_id(outcome["run_id"])
    verdict = _judge_date(spark, landed)
    single = _single_writer_per_partition(spark, table)
    print(
        f"\n[reliability] crash: Spark server JVM SIGKILL during {point}: mid_write={mid_write} "
        f"run_success={outcome['success']} version {before}->{_version(table)} "
        f"orphan_files={orphans(table)} single_writer={single} {verdict.summary()}"
    )
    assert killed and run is not None
    assert outcome["success"], err[-3000:]
    assert single
    assert verdict.ok, verdict.mismatches
    # The killed JVM's scratch (block-manager and temporary folders) went with its supervisor
    # instead of staying in /tmp: what is left is the live server's (`own_server_state`
    # checks that it goes too).
    live = spark_server.read_state(state)
    left = {p.name for p in (state / spark_server.SCRATCH_DIR).iterdir()}
    assert str(killed[0].supervisor_pid) not in left
    assert left <= ({str(live.supervisor_pid)} if live else set()), left


def _stop_server(state: Path) -> None:
    """The test's own server and its supervisor, as a whole process group."""
    current = spark_server.read_state(state)
    if current is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(current.supervisor_pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and current.alive():
            time.sleep(0.2)
        if not current.alive():
            return


# --- a run worker killed under the daemon, as users run the pipeline -------------------------

KILLED_REGION = "eu-west"
KILLED_PARTITION = f"{DATE}|{KILLED_REGION}"
DAEMON_TIMEOUT = 20 * 60.0


def _run_of(
    instance: DagsterInstance, partition: str, parent: str | None = None
) -> DagsterRun | None:
    runs = instance.get_runs(
        RunsFilter(
            job_name="regional_orders_job",
            tags={
                "dagster/partition": partition,
                **({"dagster/parent_run_id": parent} if parent else {}),
            },
        )
    )
    return runs[-1] if runs else None  # the first launched


def _worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The pid of the run's worker process, as its engine events record it."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        pid = entry.dagster_event and entry.dagster_event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(str(pid.value))
    return None


def _started_worker(instance: DagsterInstance) -> tuple[str, int] | None:
    run = _run_of(instance, KILLED_PARTITION)
    pid = run and _worker_pid(instance, run.run_id)
    return (run.run_id, pid) if run and pid else None


def _killed_region_files(table: Path) -> set[str]:
    if not table.exists():
        return set()
    return {f for f in _data_files(table) if f"region={KILLED_REGION}" in f}


def _finished(run: DagsterRun | None) -> DagsterRun | None:
    return run if run is not None and run.is_finished else None


def _gold_of(instance: DagsterInstance, date: str) -> bool | None:
    return date in instance.get_materialized_partitions(AssetKey("daily_revenue")) or None


@pytest.mark.slow
def test_a_run_worker_killed_under_the_daemon_fails_and_its_retry_heals(
    pipeline: Pipeline, tmp_path: Path, spark
) -> None:
    """The landing sensor launches a run per drop; the eu-west run's worker process is SIGKILLed
    while its silver write is in flight (as the out-of-memory killer would). Dagster must mark
    the run failed (its code server sees the worker gone), run retries must launch it again, and
    the retry must heal the partition and let the automation bring the date to gold."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    day = dt.date.fromisoformat(DATE)
    generate_landing(pipeline.landing, day, day, rows=ROWS, seed=8, anomalies=True)
    env = product_env(home, pipeline.landing, pipeline.warehouse)
    silver = pipeline.warehouse / "silver/orders"
    log = tmp_path / "dagster-daemon.log"
    with DagsterInstance.from_config(str(home)) as instance:
        # The date's rates exist first, so the sensor's first tick launches every drop.
        fx = materialize(
            [fx_rates], partition_key=DATE, resources=pipeline.resources, instance=instance
        )
        assert fx.success
        with dagster_daemon(REPO / "workspace.yaml", home, env, log) as daemon:
            try:
                run_id, pid = wait_for(
                    f"the {KILLED_PARTITION} run's worker",
                    lambda: _started_worker(instance),
                    DAEMON_TIMEOUT,
                    0.5,
                    daemon.check_alive,
                )
                before = _killed_region_files(silver)
                version = wait_for(
                    "the eu-west silver write",
                    lambda: _version(silver) if _killed_region_files(silver) - before else None,
                    DAEMON_TIMEOUT,
                    0.01,
                )
                os.kill(pid, signal.SIGKILL)
                in_flight = _version(silver) == version
                killed = wait_for(
                    "the killed run to be marked failed",
                    lambda: _finished(instance.get_run_by_id(run_id)),
                    300,
                    1.0,
                    daemon.check_alive,
                )
                retry = wait_for(
                    "the run retry to finish",
                    lambda: _finished(_run_of(instance, KILLED_PARTITION, parent=run_id)),
                    DAEMON_TIMEOUT,
                    2.0,
                    daemon.check_alive,
                )
                wait_for(
                    f"daily_revenue|{DATE}",
                    lambda: _gold_of(instance, DATE),
                    DAEMON_TIMEOUT,
                    2.0,
                    daemon.check_alive,
                )
            except BaseException:
                print(f"--- dagster-daemon log tail ({log}) ---\n{daemon.log_tail(200)}")
                raise
        explanation = [
            message
            for e in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
            if "SIGKILL" in (message := (e.dagster_event and e.dagster_event.message) or "")
        ]
        print(
            f"\n[reliability] crash: run worker SIGKILL under the daemon during the silver "
            f"write: in_flight={in_flight} killed_run={killed.status.value} "
            f"retry={retry.status.value} {explanation[:1]}"
        )
        assert killed.status == DagsterRunStatus.FAILURE
        assert explanation, "the failure says the run's process died"
        assert retry.status == DagsterRunStatus.SUCCESS
    verdict = judge(spark, pipeline.landing, pipeline.warehouse, [(DATE, r) for r in REGIONS])
    assert verdict.ok, verdict.mismatches
    assert _single_writer_per_partition(spark, silver)
