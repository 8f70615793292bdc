"""Live writes during a promotion (issue #31): a live commit racing a promotion either lands in
what readers see after the switch, or makes the promotion refuse, naming it; a live commit
that comes after the switch is refused (LiveNamespaceMoved) and writes nothing where readers
no longer look.

Real Spark and Delta tables in tmp_path; the race is a live writer in a process of its own
against promotions in this one. The release holds `reference/fx_rates` only (the other tables
empty): the lock and the checks do not depend on what the tables hold, and fx_rates' writes
are the smallest."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetCheckEvaluation, AssetKey, DagsterInstance, materialize

from regional_etl import release
from regional_etl.assets.reference import build_fx_rates_asset
from regional_etl.checks import ORDERS_GATES, REVENUE_GATES
from regional_etl.contract import CURRENCIES, REGIONS, Table, schema
from regional_etl.io.delta import current_version, daily_predicate, read_table, replace_partitions
from regional_etl.io.warehouse import WarehousePaths
from regional_etl.release.commits import commits_after
from regional_etl.release.pointer import Pointer, write_pointer
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl_tests.conftest import TEST_SPARK_CONF, pipeline_resources
from regional_etl_tests.procs import process_groups
from regional_etl_tests.release_support import REPO

DATE = "2024-03-08"  # the release's range
NEXT = "2024-03-09"  # the live writer's partition, outside the range
ROUNDS = 6


def _write_fx(spark, warehouse: WarehouseResource, date: str, rate: str, run_id: str) -> int:
    """`date`'s rates at `rate`, through the live location's guarded paths: the Delta version."""
    rows = [(dt.date.fromisoformat(date), c, Decimal(rate)) for c in CURRENCIES]
    paths = release.write_paths(warehouse)
    result = replace_partitions(
        spark.createDataFrame(rows, schema(Table.FX_RATES)),
        paths.table(Table.FX_RATES),
        Table.FX_RATES,
        daily_predicate([date]),
        run_id,
        guard=paths.commit_guard,
    )
    return result.version


def _write_empty_revenue(spark, paths: WarehousePaths, run_id: str) -> None:
    """An empty daily_revenue partition of DATE through `paths`' guard (a table where none was)."""
    replace_partitions(
        spark.createDataFrame([], schema(Table.DAILY_REVENUE)),
        paths.table(Table.DAILY_REVENUE),
        Table.DAILY_REVENUE,
        daily_predicate([DATE]),
        run_id,
        guard=paths.commit_guard,
    )


def _rate(spark, path: str, date: str) -> Decimal:
    rates = {
        r["usd_per_unit"] for r in read_table(spark, path).where(f"order_date = '{date}'").collect()
    }
    assert len(rates) == 1, rates
    return rates.pop()


def test_a_live_write_after_a_switch_is_refused_and_writes_nothing(tmp_path: Path, spark) -> None:
    # Blue fixed, as a live run holds it once it resolved the pointer at its start.
    blue = WarehouseResource(warehouse_root=str(tmp_path), namespace="blue")
    path = blue.table(Table.FX_RATES)
    version = _write_fx(spark, blue, DATE, "1.0800000000", "live-1")
    assert _rate(spark, path, DATE) == Decimal("1.0800000000")

    # A promotion switched readers to green while a live run worked.
    write_pointer(blue, Pointer("green", "blue", []))
    with pytest.raises(release.LiveNamespaceMoved) as moved:
        _write_fx(spark, blue, DATE, "1.0900000000", "live-2")
    message = str(moved.value)
    for words in (
        "reference/fx_rates",
        f"DATE '{DATE}'",
        "not written to blue: readers switched to green",
        "Re-run these partitions",
    ):
        assert words in message, message
    assert current_version(spark, path) == version
    assert _rate(spark, path, DATE) == Decimal("1.0800000000")
    # Not even an empty table where there was none.
    with pytest.raises(release.LiveNamespaceMoved):
        _write_empty_revenue(spark, release.write_paths(blue), "live-3")
    assert not Path(blue.table(Table.DAILY_REVENUE)).exists()

    # Back on blue (a rollback): the live location writes again.
    write_pointer(blue, Pointer("blue", "green", []))
    assert _write_fx(spark, blue, DATE, "1.0900000000", "live-4") == version + 1


def test_a_live_asset_run_after_a_switch_fails_naming_what_to_rerun(
    tmp_path: Path, spark, pipeline_fx_server, instance: DagsterInstance
) -> None:
    """The live location's assets write through the guard: fx_rates of blue, materialized
    after readers switched to green, fails its step with LiveNamespaceMoved and commits
    nothing (its step retries are left out: they would fail the same way, later)."""
    resources = pipeline_resources(tmp_path, pipeline_fx_server.url)
    blue: WarehouseResource = resources["warehouse"]
    Path(blue.warehouse_root).mkdir()
    write_pointer(blue, Pointer("green", "blue", []))
    result = materialize(
        [build_fx_rates_asset(retry_policy=None)],
        resources=resources,
        partition_key=DATE,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    [failed] = [e for e in result.all_events if e.is_step_failure]
    chain, error = [], failed.step_failure_data.error
    while error is not None:  # Dagster's step error, caused by the asset's
        chain.append(error)
        error = error.cause
    moved = next((e for e in chain if e.cls_name == "LiveNamespaceMoved"), None)
    assert moved is not None, chain
    assert "reference/fx_rates" in moved.message and "readers switched to green" in moved.message
    assert not Path(blue.table(Table.FX_RATES)).exists()


def test_both_locations_on_a_local_warehouse_guard_their_commits(tmp_path: Path, spark) -> None:
    """The live location's commits need their namespace still live, the release location's
    need theirs still not live (a candidate that readers switched to is the live location's
    to write). A remote warehouse has no pointer, so no switch to guard against."""
    live = WarehouseResource(warehouse_root=str(tmp_path))
    assert release.write_paths(live).commit_guard
    candidate = WarehouseResource(warehouse_root=str(tmp_path), namespace="next")
    paths = release.write_paths(candidate)
    assert paths.commit_guard and paths.root == str(tmp_path / "releases" / "green")

    write_pointer(live, Pointer("green", "blue", []))
    with pytest.raises(release.CandidateWentLive, match="not written to green: readers switched"):
        _write_empty_revenue(spark, paths, "release-1")
    assert not Path(paths.table(Table.DAILY_REVENUE)).exists()
    # Resolved again (a new run): the live location writes green, the release location blue.
    assert release.write_paths(live).root == str(tmp_path / "releases" / "green")
    assert release.write_paths(candidate).root == str(tmp_path)

    remote = WarehouseResource(warehouse_root="s3a://bucket/warehouse")
    assert release.write_paths(remote).commit_guard is None
    assert release.write_paths(remote).root == "s3a://bucket/warehouse"


@dataclass
class Round:
    lead: float  # seconds the promotion starts before the writer's commit (negative: after)
    promoted: bool
    reasons: list[str]
    answer: dict[str, Any]
    promotion: tuple[float, float]  # wall-clock start and end of promote()

    @property
    def waited(self) -> bool:
        """The promotion started while the writer held the lock shared, and waited for it."""
        held = self.answer.get("held") or []
        return len(held) == 2 and held[0] < self.promotion[0] < held[1]


class LiveWriter:
    """The writer process's pipes: one command, one JSON answer."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("{"):
                self.answers.put(json.loads(line))

    def send(self, run_id: str, rate: str, wait: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{run_id} {rate} {wait:.3f}\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """End of commands: the writer stops its Spark session and exits."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)

    def answer(self, timeout: float = 180) -> dict[str, Any]:
        try:
            return self.answers.get(timeout=timeout)
        except queue.Empty:
            tail = "".join(self.output[-40:])
            raise AssertionError(
                f"no answer from the live writer in {timeout} s:\n{tail}"
            ) from None


def _gates_passed(instance: DagsterInstance) -> None:
    """Green's blocking gates of the range, passed: what its backfill would have recorded."""
    scope = [
        ("orders", ORDERS_GATES, [f"{DATE}|{r}" for r in REGIONS]),
        ("daily_revenue", REVENUE_GATES, [DATE]),
    ]
    for asset, gates, partitions in scope:
        for gate in gates.values():
            for p in partitions:
                instance.report_runless_asset_event(
                    AssetCheckEvaluation(
                        asset_key=AssetKey(["release", asset]),
                        check_name=gate.name,
                        passed=True,
                        partition=p,
                    )
                )


def _diff(spark, green: WarehouseResource, run_id: str) -> None:
    release.write_report(green, release.compute_diff(spark, green, "green", [DATE], run_id))


@pytest.mark.slow
def test_a_live_commit_racing_a_promotion_is_never_hidden_from_readers(
    tmp_path: Path, spark, instance: DagsterInstance
) -> None:
    """Rounds of one live commit (another process) against one promotion (this one), started
    a varying time apart: first well apart each way, then closing in on the moment both want
    the lock. Each round ends in one of the two allowed outcomes, checked on the tables and the
    logs: the commit landed before the promotion's checks, which refused naming its partition
    (and readers, still on blue, see it); or the promotion switched first and the commit was
    refused with nothing written to blue (and readers, on green, see every earlier commit)."""
    blue = WarehouseResource(warehouse_root=str(tmp_path / "warehouse"))
    green = WarehouseResource(warehouse_root=str(tmp_path / "warehouse"), namespace="green")
    blue_fx = blue.table(Table.FX_RATES)
    _write_fx(spark, blue, DATE, "1.0800000000", "blue-0")
    _write_fx(spark, blue, NEXT, "1.0000000000", "blue-0")
    committed = Decimal("1.0000000000")  # NEXT's rate of blue's latest commit
    release.seed(spark, green, "seed")
    _diff(spark, green, "diff-0")
    _gates_passed(instance)

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    conf = json.dumps(TEST_SPARK_CONF)
    argv = [sys.executable, "-m", "regional_etl_tests.live_writer", blue.warehouse_root, NEXT, conf]
    rounds: list[Round] = []
    with process_groups(
        argv, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as [proc]:
        writer = LiveWriter(proc)
        assert writer.answer().get("ready"), writer.output
        # Well apart each way, then a bisection of the lead between the two outcomes.
        apart, lead, step = [2.0, -4.0], 0.0, 1.0
        for k in range(1, ROUNDS + 1):
            this = apart[k - 1] if k <= len(apart) else lead
            run_id, rate = f"live-{k}", f"1.{k:010d}"
            writer.send(run_id, rate, max(this, 0.0))
            time.sleep(max(-this, 0.0))
            started = time.time()
            try:
                release.promote(
                    spark, green, release.ReleaseThresholds(), instance, f"promote-{k}", "test"
                )
                promoted, reasons = True, []
            except release.ReleaseRefused as exc:
                promoted, reasons = False, exc.reasons
            ended = time.time()
            answer = writer.answer()
            rounds.append(Round(this, promoted, reasons, answer, (started, ended)))
            blue_runs = {c.run_id for c in commits_after(blue_fx, -1)}
            live = release.live(blue)

            if promoted:
                assert answer["outcome"] == "moved", (rounds[-1], writer.output[-20:])
                assert f"DATE '{NEXT}'" in answer["message"]
                assert run_id not in blue_runs
                assert live.namespace == "green"
                # Every commit before the switch is what readers see now.
                assert _rate(spark, live.path(Table.FX_RATES), NEXT) == committed
                assert _rate(spark, blue_fx, NEXT) == committed
                release.pointer_path(blue).unlink()  # readers back on blue for the next round
            else:
                assert answer["outcome"] == "committed", (rounds[-1], writer.output[-20:])
                assert run_id in blue_runs
                outside = [r for r in reasons if "outside the release range" in r]
                assert outside and f"reference/fx_rates: {NEXT}" in outside[0], reasons
                assert live.namespace == "blue"
                committed = Decimal(rate)
                assert _rate(spark, live.path(Table.FX_RATES), NEXT) == committed
                # What the refusal says to run, then a fresh diff: green holds blue again.
                release.catch_up(spark, green, f"catch-up-{k}")
                _diff(spark, green, f"diff-{k}")

            if k > len(apart):
                # Promoted: the commit came too late, so the next promotion starts later.
                lead += -step if promoted else step
                step = max(step / 2, 0.1)
        writer.close()

    print(
        "rounds (lead s, promoted, promotion waited for the live commit):",
        [(r.lead, r.promoted, r.waited) for r in rounds],
    )
    assert any(r.promoted for r in rounds) and any(not r.promoted for r in rounds), rounds
