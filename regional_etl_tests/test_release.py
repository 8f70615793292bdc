"""Blue-green releases on real Delta tables: a green release built by its own code location from
the same landing data with a new FX source (EUR quoted 1% higher), its diff against blue checked
against the oracle, promotion, refusals, rollback, and a reader during a promotion."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, Definitions

from regional_etl import release
from regional_etl.backfill import run_backfill
from regional_etl.checks import QualityGateResource
from regional_etl.contract import REGIONS, Table, schema
from regional_etl.definitions import build_definitions
from regional_etl.fx.server import answer
from regional_etl.generate import generate_landing
from regional_etl.io.delta import daily_predicate, read_table, replace_partitions
from regional_etl.io.landing import read_drops, ready_drop
from regional_etl.partitions import DateRegion
from regional_etl.pipeline import read_bronze, run_gold, run_silver, write_bronze
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl_tests.oracle import ecb_usd_per_unit, expected_partition
from regional_etl_tests.release_support import (
    REPO,
    ShiftedEURServer,
    failure,
    materialize_diff,
    namespace_resources,
    run_job,
    shifted_quote,
)

pytestmark = pytest.mark.slow

DATE = "2024-03-08"


@dataclass
class Release:
    landing: Path
    home: Path  # the instance's DAGSTER_HOME: a webserver started on it shows the same runs
    instance: DagsterInstance
    blue: Definitions
    green: Definitions
    warehouse: WarehouseResource  # green's
    diff: dict[str, Any]  # release/release_diff's metadata, as the UI shows it

    def reset_pointer(self) -> None:
        release.pointer_path(self.warehouse).unlink(missing_ok=True)


def _build_blue(spark, resource: WarehouseResource) -> None:
    """The live release as an earlier version of the pipeline left it: the product's own steps
    in one pass over the four drops (its gates are not what these tests are about)."""
    warehouse = resource.paths()
    partitions = [DateRegion(DATE, r) for r in REGIONS]
    rates = ecb_usd_per_unit(dt.date.fromisoformat(DATE))
    fx = spark.createDataFrame(
        [(dt.date.fromisoformat(DATE), c, r) for c, r in rates.items()], schema(Table.FX_RATES)
    )
    day = daily_predicate([DATE])
    replace_partitions(fx, warehouse.table(Table.FX_RATES), Table.FX_RATES, day, "blue")
    drops = [ready_drop(warehouse.landing, p) for p in partitions]
    write_bronze(read_drops(spark, warehouse.landing, drops), warehouse, partitions, "blue")
    gates = QualityGateResource(min_rows=10, max_quarantine_ratio=0.5)
    run = run_silver(
        read_bronze(spark, warehouse, partitions), warehouse, partitions, "blue", gates
    )
    assert not run.blocked
    assert not run_gold(spark, warehouse, [DATE], "blue").blocked


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, spark, pipeline_fx_server) -> Iterator[Release]:
    """Blue of one date, and green built from the same drops by its own code location."""
    tmp = tmp_path_factory.mktemp("release")
    day = dt.date.fromisoformat(DATE)
    generate_landing(tmp / "landing", day, day, rows=30, seed=5, anomalies=True)
    home = tmp / "dagster-home"
    home.mkdir()
    with contextlib.ExitStack() as stack:
        instance = stack.enter_context(DagsterInstance.from_config(str(home)))
        new_fx = stack.enter_context(ShiftedEURServer())
        blue_resources = namespace_resources(tmp, "blue", pipeline_fx_server.url)
        _build_blue(spark, blue_resources["warehouse"])
        blue = build_definitions(blue_resources)
        green_resources = namespace_resources(tmp, "green", new_fx.url)
        green = build_definitions(green_resources, release_location=True)
        # The documented order: seed green from blue, rebuild the range, diff.
        assert run_job(green, "start_release", instance).success
        report = run_backfill(
            green, instance, DATE, DATE, landing_root=str(tmp / "landing"), progress=print
        )
        assert report.ok, report.outcomes
        built = Release(
            tmp / "landing", home, instance, blue, green, green_resources["warehouse"], {}
        )
        built.diff = materialize_diff(green, instance, DATE, DATE)
        yield built


def _checksums(spark, live: release.LiveRelease) -> dict[str, str]:
    """sha256 of every table's sorted rows, as a reader of the live release sees them."""
    out = {}
    for t in release.DIFF_KEYS:
        rows = sorted(tuple(map(str, r)) for r in live.read(spark, t).collect())
        out[t.value] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return out


def test_a_new_fx_source_diffs_as_the_oracle_expects(built: Release, spark) -> None:
    meta = built.diff
    diff = release.ReleaseDiff.from_json(release.report_path(built.warehouse, "green").read_text())
    assert (diff.live, diff.candidate, diff.dates) == ("blue", "green", [DATE])

    day = dt.date.fromisoformat(DATE)
    blue_eur = ecb_usd_per_unit(day)["EUR"]
    quote = answer(f"/{DATE}", {"from": ["USD"], "to": ["EUR"]})[1]["rates"]["EUR"]
    green_eur = (Decimal(1) / Decimal(str(shifted_quote(quote)))).quantize(
        Decimal("1e-10"), ROUND_HALF_UP
    )
    assert green_eur != blue_eur
    eu = expected_partition(built.landing, DATE, "eu-west").orders
    cents = Decimal("0.01")
    usd_moves = sum(
        1
        for o in eu.values()
        if (o[1] * blue_eur).quantize(cents, ROUND_HALF_UP)
        != (o[1] * green_eur).quantize(cents, ROUND_HALF_UP)
    )
    revenue_moves = sum(
        (o[1] * green_eur).quantize(cents, ROUND_HALF_UP)
        - (o[1] * blue_eur).quantize(cents, ROUND_HALF_UP)
        for o in eu.values()
    )

    by = {(r["table"], r["region"]): r for r in diff.tables}
    for region in REGIONS:
        want = expected_partition(built.landing, DATE, region)
        orders = by[(Table.ORDERS.value, region)]
        changed = len(want.orders) if region == "eu-west" else 0
        assert (orders["live_rows"], orders["release_rows"]) == (len(want.orders),) * 2
        assert (orders["only_live"], orders["only_release"], orders["changed"]) == (0, 0, changed)
        expected_columns = {"fx_rate": changed, "amount_usd": usd_moves} if changed else {}
        assert orders["changed_columns"] == {k: v for k, v in expected_columns.items() if v}
        quarantine = by[(Table.ORDERS_QUARANTINE.value, region)]
        assert quarantine["release_rows"] == len(want.quarantine)
        assert (quarantine["only_live"], quarantine["only_release"], quarantine["changed"]) == (
            0,
            0,
            0,
        )
        assert by[(Table.RAW_ORDERS.value, region)]["changed"] == 0
        gold = by[(Table.DAILY_REVENUE.value, region)]
        assert gold["changed_columns"] == ({"revenue_usd": 1} if changed else {})
    fx = by[(Table.FX_RATES.value, None)]
    assert (fx["live_rows"], fx["changed"], fx["changed_columns"]) == (
        3,
        1,
        {"usd_per_unit": 1},
    )

    revenue = {r["region"]: Decimal(r["diff_usd"]) for r in diff.revenue}
    assert revenue == {r: (revenue_moves if r == "eu-west" else Decimal(0)) for r in REGIONS}
    assert diff.changed_orders == len(eu)
    assert diff.revenue_diff_by_date() == {DATE: abs(revenue_moves)}

    # The UI shows the same diff: a table per (table, date, region) and the summary.
    assert len(meta["diff"].value.records) == len(diff.tables)
    assert meta["promotable"].value is True
    assert meta["changed_orders"].value == len(eu)
    assert "**Promotable**" in meta["summary"].value


def test_the_diff_is_in_front_of_the_user_in_the_ui(built: Release, tmp_path: Path) -> None:
    """The webserver on the release workspace (blue and green side by side) and the instance the
    diff was materialized on: release/release_diff's page shows the verdict and the diff tables
    a user reads before launching promote_release (the README shows its screenshot)."""
    from regional_etl_tests.browser import Shots, chromium, skip_newsletter
    from regional_etl_tests.e2e_support import dagster_dev, isolated_env

    env = isolated_env(
        {
            "DAGSTER_HOME": str(built.home),
            "REGIONAL_ETL_LANDING": str(built.landing),
            "REGIONAL_ETL_WAREHOUSE": str(built.warehouse.warehouse_root),
        }
    )
    workspace = REPO / "workspace-release.yaml"
    log = tmp_path / "webserver.log"
    with dagster_dev(workspace, REPO, env, log, daemon=False) as web, chromium() as browser:
        # Wide and tall enough for the diff tables of the summary, scrolled to the metadata.
        page = browser.new_context(viewport={"width": 1700, "height": 1250}).new_page()
        page.set_default_timeout(120_000)
        shots = Shots(page, tmp_path, "release")
        try:
            page.goto(f"{web.url}/assets/release/release_diff")
            skip_newsletter(page)
            page.get_by_text("promotable").first.wait_for()
            page.get_by_text("max_revenue_diff_usd").first.wait_for()
            heading = page.get_by_text("Metadata", exact=True).first
            heading.evaluate("element => element.scrollIntoView({block: 'start'})")
            shots("diff")
        except BaseException:
            print(f"--- webserver log tail ({log}) ---\n{web.log_tail(200)}")
            raise


def test_promote_switches_readers_and_rollback_restores_blue_exactly(built: Release, spark) -> None:
    built.reset_pointer()
    before = _checksums(spark, release.live(built.warehouse))

    promoted = run_job(built.green, "promote_release", built.instance)
    assert promoted.success
    pointer = release.read_pointer(built.warehouse)
    assert (pointer.live, pointer.previous) == ("green", "blue")
    [entry] = pointer.history
    assert entry["run_id"] == promoted.run_id
    assert (entry["action"], entry["job"], entry["dates"]) == (
        "promote",
        "promote_release",
        [DATE, DATE],
    )
    after = _checksums(spark, release.live(built.warehouse))
    assert after == _checksums(spark, release.LiveRelease(built.warehouse, "green"))
    assert after[Table.FX_RATES.value] != before[Table.FX_RATES.value]
    assert after[Table.RAW_ORDERS.value] != before[Table.RAW_ORDERS.value]  # green's run ids

    # Promoting again is refused: green is already live.
    assert "green is already live" in failure(
        run_job(built.green, "promote_release", built.instance)
    )

    # Launched where users launch it: the release location (the live one has no release jobs).
    rolled = run_job(built.green, "rollback_release", built.instance)
    assert rolled.success
    assert release.read_pointer(built.warehouse).live == "blue"
    assert _checksums(spark, release.live(built.warehouse)) == before
    assert release.read_pointer(built.warehouse).history[-1]["run_id"] == rolled.run_id
    # One step back only: a second rollback has no promotion to undo.
    assert "already" in failure(run_job(built.green, "rollback_release", built.instance))


def test_a_release_over_its_thresholds_or_with_ungated_dates_is_refused(
    built: Release, spark
) -> None:
    built.reset_pointer()
    strict = release.ReleaseThresholds(max_changed_orders=0, max_revenue_diff_usd=0.0)
    with pytest.raises(release.ReleaseRefused) as refused:
        release.promote(spark, built.warehouse, strict, built.instance, "test-run", "test")
    reasons = " | ".join(refused.value.reasons)
    assert "orders added, removed or changed, more than max_changed_orders=0" in reasons
    assert f"{DATE}: revenue differs by" in reasons
    assert release.read_pointer(built.warehouse).live == "blue"

    # The gates of a date green never built were never evaluated: that date blocks promotion.
    next_day = (dt.date.fromisoformat(DATE) + dt.timedelta(days=1)).isoformat()
    assert release.gate_failures(built.instance, [DATE]) == []
    failed = release.gate_failures(built.instance, [DATE, next_day])
    partitions = ", ".join(f"{next_day}|{r}" for r in REGIONS)
    assert f"gate release/orders:volume never evaluated: {partitions}" in failed
    assert f"gate release/daily_revenue:all_regions_present never evaluated: {next_day}" in failed
    assert not any(DATE in f for f in failed)


def test_a_reader_during_promotion_sees_all_blue_or_all_green(built: Release, spark) -> None:
    built.reset_pointer()

    def snapshot(live: release.LiveRelease) -> tuple:
        eur = live.read(spark, Table.FX_RATES).where("currency = 'EUR'").collect()
        gold = live.read(spark, Table.DAILY_REVENUE).where("region = 'eu-west'").collect()
        return (eur[0]["usd_per_unit"], gold[0]["revenue_usd"])

    blue = snapshot(release.LiveRelease(built.warehouse, "blue"))
    green = snapshot(release.LiveRelease(built.warehouse, "green"))
    assert blue[0] != green[0] and blue[1] != green[1]

    seen: list[tuple] = []
    first_read, promoted, stop = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                was_promoted = promoted.is_set()
                seen.append(snapshot(release.live(built.warehouse)))  # one pointer per query
                first_read.set()
                if was_promoted:
                    stop.set()  # one full read that began after the switch
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            first_read.set()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert first_read.wait(120)
        result = run_job(built.green, "promote_release", built.instance)
        promoted.set()
        thread.join(120)
    finally:
        stop.set()
        thread.join(120)
    assert not errors, errors
    assert result.success
    assert set(seen) <= {blue, green}, seen
    assert seen[0] == blue and seen[-1] == green


def test_two_promotions_at_once_switch_once(built: Release, spark) -> None:
    """The release lock (filelock) serializes them: the second sees green live and refuses,
    and the pointer records one switch."""
    built.reset_pointer()
    outcomes: dict[str, Any] = {}
    start = threading.Barrier(2)

    def promote(run_id: str) -> None:
        start.wait()
        try:
            outcomes[run_id] = release.promote(
                spark, built.warehouse, release.ReleaseThresholds(), built.instance, run_id, "t"
            )
        except release.ReleaseRefused as exc:
            outcomes[run_id] = exc

    threads = [threading.Thread(target=promote, args=(f"run-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    refused = [o for o in outcomes.values() if isinstance(o, release.ReleaseRefused)]
    assert len(outcomes) == 2 and len(refused) == 1
    assert refused[0].reasons == ["green is already live"]
    pointer = release.read_pointer(built.warehouse)
    assert pointer.live == "green" and len(pointer.history) == 1


def test_a_release_starts_from_a_copy_of_the_live_tables_every_time(tmp_path: Path, spark) -> None:
    """Seeded, a release rebuilds only its range; the dates outside it stay the live ones,
    writing the release never touches the live table it was copied from, and seeding again
    replaces what the release held with the live tables as they are then."""
    from deltalake import DeltaTable

    blue = WarehouseResource(warehouse_root=str(tmp_path))
    green = WarehouseResource(warehouse_root=str(tmp_path), namespace="green")
    days = [dt.date(2024, 3, 7), dt.date(2024, 3, 8)]
    rows = [(d, "EUR", Decimal("1.0800000000")) for d in days]
    fx = spark.createDataFrame(rows, schema(Table.FX_RATES))
    path = blue.table(Table.FX_RATES)
    replace_partitions(fx, path, Table.FX_RATES, daily_predicate(map(str, days)), "blue")

    started = release.seed(spark, green, "seed-1")
    # The versions it copied, recorded for promotion; the tables blue lacks start empty.
    assert started.live_versions == {
        t.value: (1 if t is Table.FX_RATES else -1) for t in release.DIFF_KEYS
    }
    assert release.read_seed(green, "green") == started
    new = spark.createDataFrame([(days[1], "EUR", Decimal("1.0900000000"))], schema(Table.FX_RATES))
    copy = green.table(Table.FX_RATES)
    replace_partitions(new, copy, Table.FX_RATES, daily_predicate([str(days[1])]), "green")

    def rates(p: str) -> list[tuple]:
        return sorted((r["order_date"], r["usd_per_unit"]) for r in read_table(spark, p).collect())

    assert rates(path) == [(d, Decimal("1.0800000000")) for d in days]
    assert rates(copy) == [(days[0], Decimal("1.0800000000")), (days[1], Decimal("1.0900000000"))]
    with pytest.raises(release.ReleaseRefused, match="blue is live"):
        release.seed(spark, blue, "seed-blue")

    # Again, over a release that has data of its own: green is blue's again, history kept.
    again = release.seed(spark, green, "seed-2")
    assert rates(copy) == rates(path)
    assert again.versions[Table.FX_RATES.value] > started.versions[Table.FX_RATES.value]
    # Another engine reads every table of both namespaces, their history included.
    for namespace in (blue, green):
        for t in release.DIFF_KEYS:
            if not Path(namespace.table(t)).exists():
                continue
            table = DeltaTable(namespace.table(t))
            assert table.history(), t
            assert len(table.to_pandas()) == read_table(spark, namespace.table(t)).count()
