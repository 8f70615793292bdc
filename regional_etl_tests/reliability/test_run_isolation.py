"""Why concurrent runs of one partition could miscount, as fast deterministic tests on the real
Spark Connect server and real Delta tables in tmp_path.

Every session of a Spark Connect server shares the server's one CacheManager, which matches
cached data by plan. Two runs of the same partitions built identical silver plans, so they
shared one cached frame: one run's `unpersist()` dropped the other's, and a Delta write to
`bronze/raw_orders` by any run cleared it (Spark re-caches every cached plan that reads the
written path), after which it was rebuilt from the newest bronze version. Without the cache,
each action of a run re-read the newest version anyway. So the gate pass and the writes of one
run could see different bronze versions. The stress script (`scripts/stress.sh`) runs eight
runs at once on changing landing content; these tests pin each step of it down.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from regional_etl.checks import QualityGateResource
from regional_etl.contract import Table, schema
from regional_etl.generate import generate_landing
from regional_etl.io.delta import daily_predicate, replace_partitions
from regional_etl.io.landing import read_drops, ready_drop
from regional_etl.io.warehouse import WarehousePaths
from regional_etl.partitions import DateRegion
from regional_etl.pipeline import read_bronze, run_silver, write_bronze
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource
from regional_etl.transforms.silver import silver_frames
from regional_etl_tests.conftest import TEST_SPARK_CONF
from regional_etl_tests.oracle import expected_partition

DATE = "2024-03-08"
PARTITION = DateRegion(DATE, "us-east")
GATES = QualityGateResource(min_rows=10, max_quarantine_ratio=0.5)


@pytest.fixture
def other_session(spark: Any) -> Iterator[Any]:
    """A second Spark Connect session, as a concurrent run process opens one."""
    session = SparkResource(session_config=TEST_SPARK_CONF).spark_session
    yield session
    session.stop()


def _warehouse(tmp_path: Path, name: str) -> WarehousePaths:
    return WarehouseResource(
        landing_root=str(tmp_path / name / "landing"), warehouse_root=str(tmp_path / "warehouse")
    ).paths()


def _ingest(spark: Any, warehouse: WarehousePaths, rows: int, seed: int, run_id: str) -> None:
    """Generate the partition's drop in `warehouse`'s landing zone and write it to bronze."""
    day = dt.date.fromisoformat(DATE)
    generate_landing(
        warehouse.landing, day, day, rows=rows, seed=seed, anomalies=True, regions=["us-east"]
    )
    lines = read_drops(spark, warehouse.landing, [ready_drop(warehouse.landing, PARTITION)])
    write_bronze(lines, warehouse, [PARTITION], run_id)


def _fx(spark: Any, warehouse: WarehousePaths) -> None:
    day = dt.date.fromisoformat(DATE)
    fx_rows = [(day, currency, Decimal("1.1")) for currency in ("EUR", "INR", "USD")]
    frame = spark.createDataFrame(fx_rows, schema(Table.FX_RATES))
    path = warehouse.table(Table.FX_RATES)
    replace_partitions(frame, path, Table.FX_RATES, daily_predicate([DATE]), "fx-run")


def _ids(spark: Any, path: str, run_id: str) -> set[str]:
    table = spark.read.format("delta").load(path).where(f"run_id = '{run_id}'")
    return {r["order_id"] for r in table.select("order_id").collect()}


def test_a_commit_between_the_gate_pass_and_the_writes_does_not_change_what_a_run_reads(
    spark: Any, other_session: Any, tmp_path: Path
) -> None:
    """Run A gates bronze version n; run B then commits different lines for the same
    partition; run A still writes exactly what it gated: version n, reconciled with the landing
    lines that version was ingested from."""
    mine, theirs = _warehouse(tmp_path, "a"), _warehouse(tmp_path, "b")
    _ingest(spark, mine, rows=40, seed=1, run_id="run-a")
    _fx(spark, mine)

    def concurrent_commit(step: str) -> None:
        if step == "classify + convert + cache + gate":
            _ingest(other_session, theirs, rows=60, seed=2, run_id="run-b")

    bronze = read_bronze(spark, mine, [PARTITION])
    run = run_silver(bronze, mine, [PARTITION], "run-a", GATES, after_step=concurrent_commit)

    want = expected_partition(mine.landing, DATE, "us-east")
    stats = run.stats[PARTITION]
    assert (stats.landing_lines, stats.lines) == (want.lines, want.lines) == (40, 40)
    assert run.blocked == [], run.verdicts[PARTITION]
    assert _ids(spark, run.orders.path, "run-a") == set(want.orders)
    assert run.orders.rows == stats.orders == len(want.orders)
    assert run.quarantine.rows == stats.quarantined == len(want.quarantine)


def test_two_runs_of_the_same_partitions_do_not_share_a_cached_frame(
    spark: Any, other_session: Any, tmp_path: Path
) -> None:
    """Identical inputs in two sessions: each run's cached frame is its own, so one run
    unpersisting its frame leaves the other's cached."""
    warehouse = _warehouse(tmp_path, "a")
    _ingest(spark, warehouse, rows=20, seed=3, run_id="run-0")
    _fx(spark, warehouse)
    fx_path = warehouse.table(Table.FX_RATES)

    def lines(session: Any, run_id: str) -> Any:
        bronze = read_bronze(session, warehouse, [PARTITION])
        fx = session.read.format("delta").load(fx_path)
        return silver_frames(bronze, fx, run_id).lines

    a, b = lines(spark, "run-a"), lines(other_session, "run-b")
    a.persist()
    try:
        assert a.count() == 20
        assert not b.storageLevel.useMemory, "run B's frame is cached by run A's persist"
        b.persist()
        try:
            assert b.count() == 20
            a.unpersist()
            assert b.storageLevel.useMemory, "run A's unpersist dropped run B's cached frame"
        finally:
            b.unpersist()
    finally:
        a.unpersist()


def test_a_redelivery_after_the_ingest_does_not_fail_the_reconciliation_of_the_snapshot(
    spark: Any, tmp_path: Path
) -> None:
    """A file added to the drop after bronze was written belongs to the next ingest: the run
    reads a consistent snapshot and reconciles it with the landing lines it was made from."""
    warehouse = _warehouse(tmp_path, "a")
    _ingest(spark, warehouse, rows=30, seed=4, run_id="run-a")
    _fx(spark, warehouse)
    drop = ready_drop(warehouse.landing, PARTITION).path
    line = '{"order_id": "late", "user_id": "u", "amount": 5, "currency": "USD", '
    (drop / "late.jsonl").write_text(line + '"order_ts": "2024-03-08T10:00:00Z"}\n')
    (drop / "_SUCCESS").touch()

    bronze = read_bronze(spark, warehouse, [PARTITION])
    run = run_silver(bronze, warehouse, [PARTITION], "run-a", GATES)
    stats = run.stats[PARTITION]
    assert stats.landing_lines == stats.lines == 30
    assert run.blocked == [], run.verdicts[PARTITION]


def test_a_file_name_spark_percent_encodes_still_reconciles(spark: Any, tmp_path: Path) -> None:
    """The snapshot names its files by Spark's URI path (`a b%.jsonl` as `a%20b%25.jsonl`):
    the gate still finds them in the drop."""
    warehouse = _warehouse(tmp_path, "a")
    _ingest(spark, warehouse, rows=20, seed=5, run_id="run-0")
    drop = ready_drop(warehouse.landing, PARTITION).path
    for f in sorted(drop.glob("*.jsonl"))[:1]:
        f.rename(drop / f"odd name 100%{f.name}")
    (drop / "_SUCCESS").touch()
    lines = read_drops(spark, warehouse.landing, [ready_drop(warehouse.landing, PARTITION)])
    write_bronze(lines, warehouse, [PARTITION], "run-a")
    _fx(spark, warehouse)

    run = run_silver(
        read_bronze(spark, warehouse, [PARTITION]), warehouse, [PARTITION], "run-a", GATES
    )
    stats = run.stats[PARTITION]
    assert stats.landing_lines == stats.lines == 20
    assert run.blocked == [], run.verdicts[PARTITION]
