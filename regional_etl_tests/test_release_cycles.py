"""Two full release cycles on one warehouse, the way a team runs them during daily traffic: blue
live, green built and promoted, the next release built in blue and promoted, then rolled back.

The live location never changes a setting or its asset keys: its landing sensor and gold's
automation condition (ticked here as the daemon would) feed whichever slot the pointer names.
The release location always writes the other slot under its `release/` keys. Every table of the
slot readers see equals the oracle on the landing zone at every step, and a rollback that would
hide what the live location wrote since the promotion is refused until the slot it returns to
holds it. Real Spark, Delta and Dagster throughout."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, Definitions

from regional_etl import release
from regional_etl.backfill import run_backfill
from regional_etl.contract import REGIONS, Table
from regional_etl.definitions import build_definitions
from regional_etl.generate import generate_landing
from regional_etl.io.delta import read_table
from regional_etl.resources.warehouse import LIVE, NEXT, WarehouseResource
from regional_etl_tests.conftest import Pipeline, pipeline_resources
from regional_etl_tests.release_support import failure, materialize_diff, run_job
from regional_etl_tests.reliability.conftest import Driver, judge, materializations

pytestmark = pytest.mark.slow

D1, D2 = "2024-03-08", "2024-03-09"  # D1 is the release range; D2 arrives one region at a time


class Warehouse:
    """The landing zone and the slots, as the test lands drops and judges what readers see."""

    def __init__(self, tmp: Path, resources: WarehouseResource) -> None:
        self.landing, self.staging, self.resources = tmp / "landing", tmp / "staging", resources
        self.landed: list[tuple[str, str]] = []

    def land(self, date: str, regions: tuple[str, ...] = REGIONS) -> None:
        """Deliver the date's drops of `regions` (each with its _SUCCESS marker)."""
        day = dt.date.fromisoformat(date)
        if not (self.staging / f"region={regions[0]}" / f"date={date}").exists():
            generate_landing(self.staging, day, day, rows=20, seed=day.day)
        for region in regions:
            drop = Path(f"region={region}") / f"date={date}"
            shutil.copytree(self.staging / drop, self.landing / drop)
            self.landed.append((date, region))

    def root(self, slot: str) -> Path:
        return Path(self.resources.namespace_root(slot))

    def readers_see(self, spark, slot: str) -> None:
        """Readers are on `slot`, and every table of it equals the oracle for what landed."""
        assert self.resources.live_namespace() == slot
        verdict = judge(spark, self.landing, self.root(slot), self.landed)
        assert verdict.ok, (slot, verdict.mismatches)

    def dates_in(self, spark, slot: str, table: Table) -> set[str]:
        path = self.root(slot) / table.value
        rows = read_table(spark, str(path)).select("order_date").distinct().collect()
        return {str(r["order_date"]) for r in rows}


def _release(
    candidate: Definitions, instance: DagsterInstance, landing: Path, gates_before: str
) -> release.Seed:
    """One release cycle of the range D1 in the release location: start_release, the
    backfill of the range, the diff, the promotion. Returns where the release started.
    `gates_before`: what the range's gates say between the start and the rebuild."""
    assert run_job(candidate, "start_release", instance).success
    warehouse = (candidate.resources or {})["warehouse"]
    seed = release.read_seed(warehouse, warehouse.resolve_slot())
    # The release/ keys keep the gate results of the release before (in the other slot): until
    # this release rebuilds the range, they do not count.
    gates = release.gate_failures(instance, [D1], seed)
    assert gates and all(gates_before in g for g in gates), gates
    report = run_backfill(
        candidate, instance, D1, D1, landing_root=str(landing), progress=lambda _: None
    )
    assert report.ok, report.outcomes
    diff = materialize_diff(candidate, instance, D1, D1)
    assert diff["promotable"].value is True, diff["refusals"].value
    assert run_job(candidate, "promote_release", instance).success
    assert seed is not None and seed.candidate == release.read_pointer(warehouse).live
    return seed


def test_two_release_cycles_alternate_the_slots_and_the_live_location_follows(
    tmp_path: Path, spark, pipeline_fx_server, instance: DagsterInstance
) -> None:
    live_resources = pipeline_resources(tmp_path, pipeline_fx_server.url, LIVE)
    release_resources = pipeline_resources(tmp_path, pipeline_fx_server.url, NEXT)
    live = Pipeline(
        tmp_path / "landing",
        tmp_path / "warehouse",
        live_resources,
        build_definitions(live_resources),
    )
    candidate = build_definitions(release_resources, release_location=True)
    wh = Warehouse(tmp_path, live_resources["warehouse"])

    # Blue is live; a backfill of the live location loads D1 into it.
    wh.land(D1)
    loaded = run_backfill(live.defs, instance, D1, D1, progress=lambda _: None)
    assert loaded.ok, loaded.outcomes
    wh.readers_see(spark, "blue")

    # First cycle: green is seeded from blue, builds D1, and is promoted.
    first = _release(candidate, instance, wh.landing, "never evaluated")
    assert (first.live, first.candidate) == ("blue", "green")
    wh.readers_see(spark, "green")

    # The live location follows with no redeploy: its landing sensor and gold's automation
    # condition, ticked as the daemon would, load D2 of us-east into green.
    daemon = Driver(live, instance)
    wh.land(D2, ("us-east",))
    daemon.settle()
    wh.readers_see(spark, "green")
    assert D2 not in wh.dates_in(spark, "blue", Table.RAW_ORDERS)
    assert materializations(instance, "raw_orders")[f"{D2}|us-east"] == 1

    # Second cycle: the release location now writes blue; start_release replaces what blue
    # held with green's tables (green's D2 of us-east included), and blue is promoted.
    second = _release(candidate, instance, wh.landing, "not evaluated since start_release")
    assert (second.live, second.candidate) == ("green", "blue")
    wh.readers_see(spark, "blue")

    # Blue is live again and gets the next drop.
    wh.land(D2, ("eu-west",))
    daemon.settle()
    wh.readers_see(spark, "blue")
    assert D2 in wh.dates_in(spark, "blue", Table.RAW_ORDERS)

    # Rolling back to green now would hide D2 of eu-west: refused, naming it and what to run.
    refused = run_job(candidate, "rollback_release", instance)
    assert not refused.success
    reason = failure(refused)
    for words in (
        "blue changed since readers switched to it",
        f"bronze/raw_orders: {D2}|eu-west",
        "Materialize those partitions in the release location (it writes green now)",
    ):
        assert words in reason, reason
    assert release.read_pointer(wh.resources).live == "blue"

    # The release location rebuilds them in green; then the rollback goes through.
    rebuilt = candidate.resolve_job_def("regional_orders_job").execute_in_process(
        instance=instance, partition_key=f"{D2}|eu-west"
    )
    assert rebuilt.success
    rolled = run_job(candidate, "rollback_release", instance)
    assert rolled.success, failure(rolled)
    wh.readers_see(spark, "green")

    # And the live location follows the rollback too.
    wh.land(D2, ("us-west",))
    daemon.settle()
    wh.readers_see(spark, "green")

    pointer = release.read_pointer(wh.resources)
    assert [(e["action"], e["from"], e["to"]) for e in pointer.history] == [
        ("promote", "blue", "green"),
        ("promote", "green", "blue"),
        ("rollback", "blue", "green"),
    ]
    assert all("max_changed_orders" in e["thresholds"] for e in pointer.history[:2])
    # One history per live asset, whatever slot its runs wrote: no key names a slot.
    assert materializations(instance, "raw_orders")[f"{D2}|us-west"] == 1
    assert not instance.get_latest_materialization_event(AssetKey(["green", "raw_orders"]))

    # Another engine reads every table of both slots, its history included.
    from deltalake import DeltaTable

    for slot in ("blue", "green"):
        for table in release.DIFF_KEYS:
            path = wh.root(slot) / table.value
            delta = DeltaTable(str(path))
            assert delta.history(), (slot, table)
            assert len(delta.to_pandas()) == read_table(spark, str(path)).count(), (slot, table)
