"""A release never hides live data: blue keeps loading while green is built (a late drop of a
date in the release range, a new date outside it), and the promotion refuses, naming the tables
and partitions that moved and what to run, until green holds them; every table of both
namespaces stays readable by another engine; the thresholds are the deployment's.

Real Spark, Delta and Dagster throughout: blue's tables and its later loads are blue's own
backfills on the instance, green is seeded and built by its code location's jobs."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterInvalidConfigError, Definitions, materialize

from regional_etl import release
from regional_etl.backfill import run_backfill
from regional_etl.contract import REGIONS, Table, drop_path
from regional_etl.definitions import build_definitions
from regional_etl.generate import generate_landing, write_drop
from regional_etl.io.delta import read_table
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl_tests.release_support import (
    ShiftedEURServer,
    docs_diff_config,
    failure,
    materialize_diff,
    namespace_resources,
    refusal_reasons,
    run_job,
)

pytestmark = pytest.mark.slow

DATE = "2024-03-08"
NEXT = "2024-03-09"  # the date blue gains while green is built
LATE = 60  # orders of eu-west's late drop for DATE


@dataclass
class Slots:
    tmp: Path
    instance: DagsterInstance
    blue: Definitions
    green: Definitions
    warehouse: WarehouseResource  # green's


def _backfill(defs: Definitions, slots: Slots, start: str, end: str, **kwargs) -> None:
    report = run_backfill(
        defs, slots.instance, start, end, landing_root=str(slots.tmp / "landing"), **kwargs
    )
    assert report.ok, report.outcomes


@pytest.fixture(scope="module")
def slots(tmp_path_factory: pytest.TempPathFactory, spark, pipeline_fx_server) -> Iterator[Slots]:
    """Blue of DATE loaded by its own backfill; green seeded (twice), built over DATE and
    diffed: a release ready to promote, before blue moves."""
    tmp = tmp_path_factory.mktemp("live-moves")
    day = dt.date.fromisoformat(DATE)
    generate_landing(tmp / "landing", day, day, rows=30, seed=7)
    with contextlib.ExitStack() as stack:
        home = tmp / "dagster-home"
        home.mkdir()
        instance = stack.enter_context(DagsterInstance.from_config(str(home)))
        new_fx = stack.enter_context(ShiftedEURServer())
        green_resources = namespace_resources(tmp, "green", new_fx.url)
        slots = Slots(
            tmp,
            instance,
            build_definitions(namespace_resources(tmp, "blue", pipeline_fx_server.url)),
            build_definitions(green_resources, release_location=True),
            green_resources["warehouse"],
        )
        _backfill(slots.blue, slots, DATE, DATE)
        # A second start_release replaces what the first one left in green.
        for _ in range(2):
            assert run_job(slots.green, "start_release", instance).success
        _backfill(slots.green, slots, DATE, DATE)
        assert materialize_diff(slots.green, instance, DATE, DATE)["promotable"].value is True
        yield slots


def _tables(slots: Slots, namespace: str) -> dict[Table, str]:
    return {t: slots.warehouse.table(t, namespace) for t in release.DIFF_KEYS}


def _order_ids(spark, path: str, date: str, region: str) -> set[str]:
    rows = read_table(spark, path).where(f"order_date = '{date}' AND region = '{region}'")
    return {r["order_id"] for r in rows.select("order_id").collect()}


def test_seeding_twice_leaves_every_table_readable_by_delta_rs(slots: Slots, spark) -> None:
    from deltalake import DeltaTable

    seeds = [
        r for r in slots.instance.get_run_records() if r.dagster_run.job_name == "start_release"
    ]
    assert len(seeds) == 2 and all(r.dagster_run.is_success for r in seeds)
    started = release.read_seed(slots.warehouse, "green")
    assert started is not None and started.live == "blue"
    for namespace in ("blue", "green"):
        for t, path in _tables(slots, namespace).items():
            table = DeltaTable(path)
            history = table.history()
            assert history and all("operation" in c for c in history), (namespace, t)
            assert not any(c["operation"] == "CLONE" for c in history), (namespace, t)
            assert len(table.to_pandas()) == read_table(spark, path).count(), (namespace, t)


def test_a_reversed_range_in_the_docs_config_names_the_fields_the_user_typed(
    slots: Slots,
) -> None:
    assets_def = slots.green.resolve_assets_def(AssetKey(["release", "release_diff"]))
    result = materialize(
        [assets_def],
        instance=slots.instance,
        run_config=docs_diff_config(NEXT, DATE),
        raise_on_error=False,
    )
    assert f"config end {DATE} is before config start {NEXT}" in failure(result)


def test_the_thresholds_are_the_deployments_not_the_launchpads(
    slots: Slots, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The override that once loosened a promotion is no config Dagster accepts; the
    deployment's setting, read when the promotion runs, is what judges it."""
    release.pointer_path(slots.warehouse).unlink(missing_ok=True)
    job = slots.green.resolve_job_def("promote_release")
    loosen = {"resources": {"release_thresholds": {"config": {"max_changed_orders": 1000000}}}}
    with pytest.raises(DagsterInvalidConfigError, match="release_thresholds"):
        job.execute_in_process(instance=slots.instance, run_config=loosen)

    monkeypatch.setenv("REGIONAL_ETL_RELEASE_MAX_CHANGED_ORDERS", "0")
    refused = run_job(slots.green, "promote_release", slots.instance)
    assert "more than max_changed_orders=0" in failure(refused)
    assert release.read_pointer(slots.warehouse).live == "blue"


def test_a_promotion_refuses_while_blue_moved_and_promotes_once_green_holds_it(
    slots: Slots, spark, monkeypatch: pytest.MonkeyPatch
) -> None:
    release.pointer_path(slots.warehouse).unlink(missing_ok=True)
    monkeypatch.delenv("REGIONAL_ETL_RELEASE_MAX_CHANGED_ORDERS", raising=False)
    monkeypatch.delenv("REGIONAL_ETL_RELEASE_MAX_REVENUE_DIFF_USD", raising=False)
    landing = slots.tmp / "landing"
    blue_orders = slots.warehouse.table(Table.ORDERS, "blue")

    # After the diff, blue takes a late drop of DATE's eu-west (a second file of 60 orders,
    # its _SUCCESS touched again) and a whole new date, each through a blue backfill.
    first = next(drop_path(landing, DATE, "eu-west").glob("*.jsonl"))
    template = json.loads(first.read_text().splitlines()[0])
    late = [
        json.dumps({**template, "order_id": f"ORD-EUW-LATE-{i:06d}"}) for i in range(1, LATE + 1)
    ]
    write_drop(landing, DATE, "eu-west", late, file_name="late.jsonl")
    before = _order_ids(spark, blue_orders, DATE, "eu-west")
    _backfill(slots.blue, slots, DATE, DATE, regions=["eu-west"])
    assert len(_order_ids(spark, blue_orders, DATE, "eu-west") - before) == LATE
    day = dt.date.fromisoformat(NEXT)
    generate_landing(landing, day, day, rows=30, seed=8)
    _backfill(slots.blue, slots, NEXT, NEXT)

    refused = run_job(slots.green, "promote_release", slots.instance)
    assert not refused.success
    reasons = refusal_reasons(refused)
    assert release.read_pointer(slots.warehouse).live == "blue"
    # Inside the range: green's DATE eu-west predates blue's late drop; the other regions of
    # the date were not touched by blue, so they are not named.
    inside = next(r for r in reasons if "inside the release range" in r)
    assert f"silver/orders: {DATE}|eu-west" in inside
    assert not any(f"{DATE}|{r}" in inside for r in REGIONS if r != "eu-west")
    assert "materialize those partitions in green again, then release_diff" in inside
    # Outside it: the new date, in every table blue wrote it to.
    outside = next(r for r in reasons if "outside the release range" in r)
    for t in (Table.RAW_ORDERS, Table.ORDERS):
        assert f"{t.value}: " + ", ".join(f"{NEXT}|{r}" for r in sorted(REGIONS)) in outside
    assert f"{Table.DAILY_REVENUE.value}: {NEXT}" in outside
    assert "launch catch_up_release" in outside

    # What the refusals say to run. catch_up_release copies the new date from blue again and
    # lists what only a rebuild brings in: the late drop's partition, inside the range.
    caught = run_job(slots.green, "catch_up_release", slots.instance)
    assert caught.success
    [output] = [e for e in caught.all_events if e.is_successful_output]
    copied, to_rebuild = (
        output.step_output_data.metadata[k].value for k in ("copied", "to_rebuild")
    )
    assert isinstance(copied, dict) and isinstance(to_rebuild, dict)
    assert copied[Table.ORDERS.value] == [f"{NEXT}|{r}" for r in sorted(REGIONS)]
    assert to_rebuild[Table.ORDERS.value] == [f"{DATE}|eu-west"]
    # Not promotable yet: green changed since the diff, and DATE|eu-west is still blue's news.
    reasons = refusal_reasons(run_job(slots.green, "promote_release", slots.instance))
    assert any("green tables changed since the diff" in r for r in reasons)
    assert not any("outside the release range" in r for r in reasons)
    assert any(f"{DATE}|eu-west" in r for r in reasons if "inside the release range" in r)
    # Green rebuilt over its range from the landing as it is now, diffed again: promotable.
    _backfill(slots.green, slots, DATE, DATE)
    assert materialize_diff(slots.green, slots.instance, DATE, DATE)["promotable"].value is True
    promoted = run_job(slots.green, "promote_release", slots.instance)
    assert promoted.success, failure(promoted)
    live = release.live(slots.warehouse)
    assert live.namespace == "green"
    for date in (DATE, NEXT):
        for region in REGIONS:
            assert _order_ids(spark, live.path(Table.ORDERS), date, region) == _order_ids(
                spark, blue_orders, date, region
            ), (date, region)
    [entry] = release.read_pointer(slots.warehouse).history
    assert entry["thresholds"] == {"max_changed_orders": 1000, "max_revenue_diff_usd": 1000.0}
    assert entry["live_versions"] == release.table_versions(spark, slots.warehouse, "blue")
