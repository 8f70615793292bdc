"""Hostile input (issue 13, scenario 5) and other engines (scenario 7): one landing zone with one
drop per kind of hostile input (line-level kinds share a drop), ONE backfill over it (the range
runs an asset backfill makes: one per asset level and range), then every line is found in
exactly one output table, or its partition failed with a message naming the file, and delta-rs
reads every table as Spark does. A line that is not UTF-8 or is over the line limit is a line's
problem (quarantined); a file that cannot be read fails its drop, and only its drop.

The expected outcome of every kind is written down in `CASES` and `FAILS` before the run, and
the oracle (an independent reading of the contract) must agree with it before the tables are
judged.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    instance_for_test,
    materialize,
)
from deltalake import DeltaTable

from regional_etl.checks import QualityGateResource
from regional_etl.contract import REGIONS, SUCCESS_MARKER, Table
from regional_etl.definitions import build_definitions
from regional_etl.fx.server import FXServer
from regional_etl.io.landing import LandingFileError, count_lines, ready_drop, scan_drops
from regional_etl.partitions import DateRegion
from regional_etl.resources.fx import FXRatesResource
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource
from regional_etl_tests import oracle
from regional_etl_tests.conftest import TEST_SPARK_CONF

DAY = "2024-03-04"  # drops whose lines are ingested
DAY2 = "2024-03-05"  # the 0-byte drop (us-west) beside clean ones: gated out on its own
BAD_DAY = "2024-03-07"  # line defects (ingested) beside drops that cannot be read (failed)
TS = f"{DAY}T10:00:00+00:00"
MALFORMED, NO_ID, NO_USER = "malformed", "missing_order_id", "missing_user_id"
AMOUNT, CURRENCY, TIMESTAMP, DUP = (
    "invalid_amount",
    "invalid_currency",
    "invalid_timestamp",
    "duplicate",
)
ENCODING, TOO_LONG = "invalid_encoding", "line_too_long"
HUGE_BYTES = 5_000_000  # one line of a runaway export, five times the contract's limit
ORDER = "order"  # the line is a published order

# Range runs as a backfill launches them (Dagster's tags); the terminal gets warnings only.
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
CONSOLE_WARNINGS_ONLY = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def rec(order_id: str, **over: Any) -> str:
    record: dict[str, Any] = {
        "order_id": order_id,
        "user_id": f"u-{order_id}",
        "amount": "10.00",
        "currency": "USD",
        "order_ts": TS,
    }
    record.update(over)
    return json.dumps(record)


def raw(order_id: str, amount_literal: str) -> str:
    """A line with an amount literal that json.dumps cannot write (NaN, 1e400, ...)."""
    return (
        f'{{"order_id": "{order_id}", "user_id": "u", "amount": {amount_literal}, '
        f'"currency": "USD", "order_ts": "{TS}"}}'
    )


@dataclass(frozen=True)
class Case:
    """One kind of hostile line input: its lines, each with the outcome expected for it."""

    kind: str
    lines: list[tuple[str, str]]  # (line text, ORDER or the quarantine reason)


# Line-level kinds, all in us-east's drop of DAY (file a-lines.jsonl), in this order.
CASES = [
    Case("truncated JSON", [('{"order_id": "T1", "user_id": "u1", "amo', MALFORMED)]),
    Case(
        "a line that is not an object (array, string, null, number, blank)",
        [(text, MALFORMED) for text in ("[1, 2]", '"an order"', "null", "42", "")],
    ),
    Case(
        "wrong types (boolean or object amount, numeric timestamp or currency)",
        [
            (rec("W1", amount=True), AMOUNT),
            (rec("W2", amount={"value": 10}), AMOUNT),
            (rec("W3", order_ts=1709546400), TIMESTAMP),
            (rec("W4", currency=840), CURRENCY),
        ],
    ),
    Case(
        "empty or blank strings",
        [
            (rec(""), NO_ID),
            (rec("S2", user_id="   "), NO_USER),
            (rec("S3", amount=""), AMOUNT),
            (rec("S4", currency=""), CURRENCY),
            (rec("S5", order_ts=""), TIMESTAMP),
        ],
    ),
    Case(
        "NaN and Infinity",
        [
            (raw("N1", "NaN"), AMOUNT),
            (raw("N2", "Infinity"), AMOUNT),
            (raw("N3", "-Infinity"), AMOUNT),
            (rec("N4", amount="NaN"), AMOUNT),
        ],
    ),
    Case("negative amount", [(rec("A1", amount=-5), AMOUNT)]),
    Case("zero amount", [(rec("A2", amount=0), AMOUNT), (rec("A3", amount="0.00"), AMOUNT)]),
    Case(
        "huge amounts (over the bound, overflowing a double; the bound itself is valid)",
        [
            (rec("A4", amount=1_000_000.01), AMOUNT),
            (raw("A5", "1e400"), AMOUNT),
            (rec("A6", amount=1_000_000), ORDER),
        ],
    ),
    Case(
        "many decimals (rounded half-up to 4 places; rounding to 0 is not positive)",
        [(rec("A7", amount="12.123456789"), ORDER), (rec("A8", amount=0.00001), AMOUNT)],
    ),
    Case("lower-case currency", [(rec("C1", currency="usd"), CURRENCY)]),
    Case("unknown currency", [(rec("C2", currency="XYZ"), CURRENCY)]),
    Case(
        "timestamps without offset or in another shape",
        [
            (rec("T2", order_ts=f"{DAY}T10:00:00"), TIMESTAMP),
            (rec("T3", order_ts=f"{DAY} 10:00:00+00:00"), TIMESTAMP),
        ],
    ),
    Case(
        "timestamp far in the future (valid by the contract)",
        [(rec("T4", order_ts="9999-12-31T23:59:59+00:00"), ORDER)],
    ),
    Case(
        "a deeply nested object (5000 levels: past every JSON parser's depth limit)",
        [(rec("X1")[:-1] + ', "meta": ' + "[" * 5000 + "]" * 5000 + "}", MALFORMED)],
    ),
    Case(
        "extra fields, nested ones included",
        [(rec("X2", coupon="SPRING", meta={"tags": ["a", "b"], "n": 1}), ORDER)],
    ),
    Case(
        "the same order id with different contents, twice in one file (later order_ts wins)",
        [
            (rec("D2", amount="5.00", order_ts=f"{DAY}T09:00:00+00:00"), DUP),
            (rec("D2", amount="6.00", order_ts=f"{DAY}T11:00:00+00:00"), ORDER),
        ],
    ),
    # Its twin with the same order_ts is in b-redelivery.jsonl: on a tie the later file wins.
    Case("the same order id across two files", [(rec("D1", amount="7.00"), DUP)]),
]
OTHER_FILE_LINES = [(rec("D1", amount="8.00"), ORDER), (rec("B1"), ORDER)]

# File- and folder-level kinds that still ingest, each in a drop of DAY.
FILE_KINDS = {
    "an empty file beside non-empty ones": ("us-east", "c-empty.jsonl: no lines, no rows"),
    "CRLF line ends": ("us-west", "crlf.jsonl: 3 orders, no \\r in any value"),
    "a UTF-8 byte order mark": ("us-west", "bom.jsonl: the BOM is not content, 2 orders"),
    "a clean drop (control)": ("eu-west", "3 orders"),
    "a clean drop of the other currency (control)": ("ap-south", "3 orders"),
}


# Line-level kinds of BAD_DAY: the line is quarantined, the rest of its drop flows.
LINE_DEFECTS = {
    f"{BAD_DAY}|us-east": ("non-UTF-8 bytes (Latin-1 text) on line 2", "latin1.jsonl", 2, ENCODING),
    f"{BAD_DAY}|ap-south": ("one 5 MB line between two orders", "huge.jsonl", 2, TOO_LONG),
}
# Drops that must fail, by partition, with what the failure message says about each.
FAILS = {
    f"{BAD_DAY}|us-west": (
        "a file that vanished after the listing (a dangling symlink)",
        ["region=us-west/date=2024-03-07/gone.jsonl could not be read"],
    ),
    f"{BAD_DAY}|eu-west": (
        "a symlink leading outside the landing root, and a folder named like a data file",
        [
            "region=eu-west/date=2024-03-07/escape.jsonl leads to",
            "outside the landing root",
            "region=eu-west/date=2024-03-07/folder.jsonl could not be read",
        ],
    ),
    f"{DAY2}|us-west": (
        "a 0-byte drop: _SUCCESS and no file",
        ["{'2024-03-05|us-west': ['volume']}"],
    ),
}
# Folders the scan must report, and nothing of which may reach a table.
IGNORED = {
    "region=mars/date=2024-03-04": "a region folder outside the list",
    "region=us-east/date=yesterday": "a date folder that is not a date",
    "region=us-east/date=2024-02-30": "a date folder that is not a calendar date",
}
KINDS = len(CASES) + len(FILE_KINDS) + len(LINE_DEFECTS) + len(FAILS) + len(IGNORED)


def currency_of(region: str) -> str:
    return oracle.CURRENCY[region]


def write_bytes(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


LATIN1 = rec("L2", user_id="Jos\u00e9").replace("\\u00e9", "\u00e9").encode("latin-1")
# Two bytes a character, so the prefix bronze keeps is cut on a character boundary.
HUGE = (
    rec("H1", currency="INR", note="\u00e9" * (HUGE_BYTES // 2))
    .replace("\\u00e9", "\u00e9")
    .encode()
)


def build_landing(landing: Path, outside: Path) -> None:
    """The hostile landing zone: every drop written in full, then its `_SUCCESS`."""

    def drop(region: str, day: str = DAY) -> Path:
        return landing / f"region={region}" / f"date={day}"

    def lines(texts: list[str], end: str = "\n") -> bytes:
        return "".join(t + end for t in texts).encode()

    east = drop("us-east")
    write_bytes(east, "a-lines.jsonl", lines([text for c in CASES for text, _ in c.lines]))
    write_bytes(east, "b-redelivery.jsonl", lines([text for text, _ in OTHER_FILE_LINES]))
    write_bytes(east, "c-empty.jsonl", b"")
    west = drop("us-west")
    write_bytes(west, "crlf.jsonl", lines([rec(f"R{n}") for n in range(3)], "\r\n"))
    write_bytes(west, "bom.jsonl", b"\xef\xbb\xbf" + lines([rec("M1"), rec("M2")]))
    for region in ("eu-west", "ap-south"):
        write_bytes(
            drop(region),
            "orders.jsonl",
            lines([rec(f"K{n}", currency=currency_of(region)) for n in range(3)]),
        )

    for region in ("us-east", "eu-west", "ap-south"):
        write_bytes(
            drop(region, DAY2), "orders.jsonl", lines([rec("P1", currency=currency_of(region))])
        )
    drop("us-west", DAY2).mkdir(parents=True)

    write_bytes(drop("us-east", BAD_DAY), "latin1.jsonl", lines([rec("L1")]) + LATIN1 + b"\n")
    drop("us-west", BAD_DAY).mkdir(parents=True)
    (drop("us-west", BAD_DAY) / "gone.jsonl").symlink_to(landing / "gone.jsonl")
    outside.mkdir()
    (outside / "secret.jsonl").write_bytes(lines([rec("Z1", currency="EUR")]))
    drop("eu-west", BAD_DAY).mkdir(parents=True)
    (drop("eu-west", BAD_DAY) / "escape.jsonl").symlink_to(outside / "secret.jsonl")
    (drop("eu-west", BAD_DAY) / "folder.jsonl").mkdir()
    write_bytes(
        drop("ap-south", BAD_DAY),
        "huge.jsonl",
        lines([rec("H0", currency="INR"), HUGE.decode(), rec("H2", currency="INR")]),
    )

    write_bytes(landing / "region=mars" / f"date={DAY}", "orders.jsonl", lines([rec("Q1")]))
    for folder in IGNORED:
        (landing / folder).mkdir(parents=True, exist_ok=True)
    for marker_dir in [drop(r, d) for d in (DAY, DAY2, BAD_DAY) for r in REGIONS]:
        (marker_dir / SUCCESS_MARKER).write_bytes(b"")
    for folder in IGNORED:
        (landing / folder / SUCCESS_MARKER).write_bytes(b"")


@dataclass
class HostileRun:
    landing: Path
    warehouse: Path
    instance: DagsterInstance
    runs: dict[str, tuple[bool, str]]  # job and range -> (success, run id)
    rows: dict[Table, list[dict[str, Any]]]  # every table as Spark reads it, read once

    def table(self, table: Table) -> str:
        return str(self.warehouse / table.value)


# The backfill's runs: (asset, first partition, last partition), one per asset level and
# range, a level once the one before it is in; a multi-partition range is the product of its
# dates and its regions (regions in the order of the contract, us-east first). Silver runs
# only over the drops that bronze published, as the backfill requests it.
BACKFILL = [
    ("fx_rates", DAY, BAD_DAY),
    ("raw_orders", f"{DAY}|us-east", f"{DAY2}|ap-south"),
    ("raw_orders", f"{BAD_DAY}|us-east", f"{BAD_DAY}|ap-south"),
    ("orders", f"{DAY}|us-east", f"{DAY2}|ap-south"),
    ("orders", f"{BAD_DAY}|us-east", f"{BAD_DAY}|us-east"),
    ("orders", f"{BAD_DAY}|ap-south", f"{BAD_DAY}|ap-south"),
    ("daily_revenue", DAY, DAY2),
]


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, spark: Any, pipeline_fx_server: FXServer
) -> Iterator[HostileRun]:
    root = tmp_path_factory.mktemp("hostile")
    landing, warehouse = root / "landing", root / "warehouse"
    build_landing(landing, root / "outside")
    resources: dict[str, Any] = {
        "spark": SparkResource(session_config=TEST_SPARK_CONF),
        "warehouse": WarehouseResource(landing_root=str(landing), warehouse_root=str(warehouse)),
        # One valid order is enough volume here; an empty partition is not. Every kind of bad
        # line shares us-east's drop, so most of it is quarantined: a real drop that bad is
        # blocked by the ratio gate (test_gates.py), this one is judged line by line.
        "quality_gates": QualityGateResource(
            min_rows=1, max_quarantine_ratio=1.0, block_quarantine_ratio=1.0
        ),
        "fx": FXRatesResource(
            base_url=pipeline_fx_server.url,
            breaker_storage_url=f"sqlite:///{root / 'breaker.sqlite'}",
            backoff_base_seconds=0.01,
            backoff_max_seconds=0.05,
        ),
    }
    assets = list(build_definitions(resources).assets or [])
    runs = {}
    with instance_for_test() as instance:
        for asset, first, last in BACKFILL:
            result = materialize(
                assets,  # type: ignore[arg-type]
                # orders and orders_quarantine are one step: selected together.
                selection=AssetSelection.assets(asset).required_multi_asset_neighbors(),
                run_config=CONSOLE_WARNINGS_ONLY,
                instance=instance,
                resources=resources,
                tags={RANGE_START: first, RANGE_END: last},
                raise_on_error=False,
            )
            runs[f"{asset} {first}..{last}"] = (result.success, result.run_id)
        rows = {
            t: [r.asDict() for r in spark.read.format("delta").load(str(warehouse / t)).collect()]
            for t in Table
        }
        yield HostileRun(landing, warehouse, instance, runs, rows)


def failure_messages(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the description of its STEP_FAILURE (what the UI shows first)."""
    found = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        assert event is not None and event.step_key is not None
        data = event.step_failure_data
        found[event.step_key] = (
            data.user_failure_data.description
            if data.user_failure_data is not None
            else data.error.to_string()
            if data.error is not None
            else ""
        ) or ""
    return found


def rows_by_partition(rows: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((str(r["order_date"]), r["region"]) for r in rows)


def in_partition(rows: list[dict[str, Any]], order_date: str, region: str) -> list[dict]:
    return [r for r in rows if (str(r["order_date"]), r["region"]) == (order_date, region)]


def test_the_cases_are_written_down_and_the_oracle_agrees(tmp_path: Path) -> None:
    """Before any run: at least 20 kinds, and the oracle reads each line as the table says."""
    assert KINDS >= 20
    build_landing(tmp_path / "landing", tmp_path / "outside")
    expected = oracle.expected_partition(tmp_path / "landing", DAY, "us-east")
    declared = [outcome for c in CASES for _, outcome in c.lines]
    by_line = {
        n: expected.quarantine.get(("region=us-east/date=2024-03-04/a-lines.jsonl", n))
        for n in range(1, len(declared) + 1)
    }
    assert [by_line[n] or ORDER for n in range(1, len(declared) + 1)] == declared


@pytest.mark.slow
def test_every_hostile_line_lands_in_exactly_one_table_or_fails_its_partition(
    hostile: HostileRun,
) -> None:
    success = {key: ok for key, (ok, _) in hostile.runs.items()}
    assert success == {
        f"fx_rates {DAY}..{BAD_DAY}": True,
        f"raw_orders {DAY}|us-east..{DAY2}|ap-south": True,
        f"raw_orders {BAD_DAY}|us-east..{BAD_DAY}|ap-south": False,  # two unreadable drops
        f"orders {DAY}|us-east..{DAY2}|ap-south": False,  # the 0-byte drop only
        f"orders {BAD_DAY}|us-east..{BAD_DAY}|us-east": True,  # a Latin-1 line quarantined
        f"orders {BAD_DAY}|ap-south..{BAD_DAY}|ap-south": True,  # a 5 MB line quarantined
        f"daily_revenue {DAY}..{DAY2}": False,  # DAY2 lacks us-west; DAY is written
    }

    # The failed partitions: the one failure of their run says why, naming each file.
    good_range = hostile.runs[f"orders {DAY}|us-east..{DAY2}|ap-south"][1]
    bad_range = hostile.runs[f"raw_orders {BAD_DAY}|us-east..{BAD_DAY}|ap-south"][1]
    assert list(failure_messages(hostile.instance, good_range)) == ["orders"]
    assert list(failure_messages(hostile.instance, bad_range)) == ["raw_orders"]
    for partition, (kind, says) in FAILS.items():
        run_id = bad_range if partition.startswith(BAD_DAY) else good_range
        message = next(iter(failure_messages(hostile.instance, run_id).values()))
        assert partition in message, (kind, message)
        for fragment in says:
            assert fragment in message, (kind, message)
    tables = hostile.rows
    bronze = rows_by_partition(tables[Table.RAW_ORDERS])
    orders = rows_by_partition(tables[Table.ORDERS])
    quarantine = rows_by_partition(tables[Table.ORDERS_QUARANTINE])
    ingested = {(d, r) for d in (DAY, DAY2) for r in REGIONS} - {(DAY2, "us-west")}
    ingested |= {tuple(p.split("|")) for p in LINE_DEFECTS}
    # No other partition changed: the ignored folders, the symlink's target and the failed
    # drops reached no table; the 0-byte drop has no rows anywhere (nothing to hold).
    assert set(bronze) == set(orders) == ingested
    assert set(quarantine) == {(DAY, "us-east")} | {tuple(p.split("|")) for p in LINE_DEFECTS}

    # Every line of every ingested drop in exactly one table, as the oracle says; the oracle
    # itself agreed with the written-down outcomes before the run.
    for order_date, region in sorted(ingested):
        expected = oracle.expected_partition(hostile.landing, order_date, region)
        got_orders = {
            r["order_id"]: tuple(
                r[c] for c in ("user_id", "amount", "currency", "order_ts", "fx_rate", "amount_usd")
            )
            for r in in_partition(tables[Table.ORDERS], order_date, region)
        }
        got_quarantine = {
            (r["source_file"], r["line_number"]): r["reason"]
            for r in in_partition(tables[Table.ORDERS_QUARANTINE], order_date, region)
        }
        assert got_orders == expected.orders, region
        assert got_quarantine == expected.quarantine, region
        landing_lines = expected.lines
        assert bronze[(order_date, region)] == landing_lines
        assert orders[(order_date, region)] + quarantine[(order_date, region)] == landing_lines

    # The line-level defects: bronze keeps what it can, says what it did, and quarantine names
    # the reason; the lines around them are orders.
    for partition, (kind, name, line, reason) in LINE_DEFECTS.items():
        order_date, region = partition.split("|")
        source = f"region={region}/date={order_date}/{name}"
        [kept] = [r for r in tables[Table.RAW_ORDERS]
                  if (r["source_file"], r["line_number"]) == (source, line)]  # fmt: skip
        [rejected] = [r for r in tables[Table.ORDERS_QUARANTINE]
                      if (r["source_file"], r["line_number"]) == (source, line)]  # fmt: skip
        assert (kept["defect"], rejected["reason"], rejected["raw"]) == (
            reason,
            reason,
            kept["value"],
        ), kind
        if reason == ENCODING:
            assert kept["value"] == LATIN1.decode("utf-8", errors="replace"), kind
            assert kept["line_bytes"] == len(LATIN1)
        else:
            assert kept["line_bytes"] == len(HUGE) > HUGE_BYTES
            assert HUGE.decode().startswith(kept["value"]), kind
            assert 1000 < len(kept["value"].encode()) <= 1024, kind
    clean = [r for r in tables[Table.RAW_ORDERS] if str(r["order_date"]) != BAD_DAY]
    assert all(r["defect"] is None and r["line_bytes"] is None for r in clean)

    east = bronze[(DAY, "us-east")]
    assert east == sum(len(c.lines) for c in CASES) + len(OTHER_FILE_LINES)
    assert orders[(DAY, "us-west")] == 5  # CRLF and BOM files: every line an order
    values = [r["value"] for r in tables[Table.RAW_ORDERS] if r["region"] == "us-west"]
    assert not [v for v in values if "\r" in v or "\ufeff" in v]
    amounts = {r["order_id"]: r["amount"] for r in tables[Table.ORDERS]}
    assert amounts["A7"] == Decimal("12.1235") and amounts["D1"] == Decimal("8.0000")
    assert amounts["D2"] == Decimal("6.0000")

    # The scan reports every folder that breaks the layout, and the run wrote none of them.
    problems = {
        str(p.relative_to(hostile.landing)) for p, _ in scan_drops(hostile.landing).problems
    }
    assert problems == set(IGNORED)

    # Gold of the good date covers the four regions; the date with a region gated out has none.
    gold = tables[Table.DAILY_REVENUE]
    assert set(rows_by_partition(gold)) == {(DAY, r) for r in REGIONS}
    assert {r["region"]: r["orders"] for r in gold} == {
        region: orders[(DAY, region)] for region in REGIONS
    }


def test_a_file_that_vanishes_between_listing_and_reading_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "region=eu-west" / f"date={DAY}"
    write_bytes(folder, "a.jsonl", (rec("V1", currency="EUR") + "\n").encode())
    write_bytes(folder, "b.jsonl", (rec("V2", currency="EUR") + "\n").encode())
    (folder / SUCCESS_MARKER).write_bytes(b"")
    drop = ready_drop(tmp_path, DateRegion(DAY, "eu-west"))
    (folder / "b.jsonl").unlink()
    with pytest.raises(LandingFileError, match=r"region=eu-west/date=2024-03-04/b\.jsonl"):
        count_lines([drop])


@pytest.mark.slow
def test_delta_rs_reads_every_table_as_spark_does(hostile: HostileRun) -> None:
    """Scenario 7: after the hostile input, every table reads the same in delta-rs and Spark."""
    for table in Table:
        by_spark = hostile.rows[table]
        by_rust = DeltaTable(hostile.table(table)).to_pyarrow_table().to_pylist()
        assert len(by_spark) > 0, table
        assert sorted(map(_comparable, by_rust)) == sorted(map(_comparable, by_spark)), table


def _comparable(row: dict[str, Any]) -> str:
    """A row as sorted text, with timestamps as UTC instants (Spark reads them naive, in the
    session's UTC; delta-rs reads them tz-aware)."""
    out = {}
    for key, value in row.items():
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        out[key] = str(value)
    return json.dumps(out, sort_keys=True)
