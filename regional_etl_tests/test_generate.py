"""The synthetic landing zone honours the landing contract, and its summary tells the truth.

Lines are checked here by an independent, plain-Python reading of the contract (`_reason`), so a
generator bug and a reader bug cannot cancel out.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from regional_etl.contract import (
    LANDING_SUFFIX,
    LINE_DEFECTS,
    MAX_AMOUNT,
    REGION_CURRENCY,
    REGIONS,
    SUCCESS_MARKER,
    ContractError,
    Reason,
    drop_path,
)
from regional_etl.generate import (
    AMOUNT_MEDIAN,
    ANOMALY_KINDS,
    REGION_UTC_OFFSET,
    DropSummary,
    GenerateSummary,
    build_drop,
    generate_landing,
    write_drop,
)

START, END = date(2024, 3, 1), date(2024, 3, 2)
ROWS = 1000
NEVER = datetime.min  # stands in for an unparseable timestamp, which a clean drop must not have


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> GenerateSummary:
    return generate_landing(tmp_path_factory.mktemp("clean"), START, END, rows=ROWS, seed=7)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> GenerateSummary:
    root = tmp_path_factory.mktemp("dirty")
    return generate_landing(root, START, END, rows=ROWS, seed=7, anomalies=True)


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"{path} does not end with a newline"
    return text.split("\n")[:-1]


def _drop_lines(drop: DropSummary) -> list[str]:
    return [line for path in drop.files for line in _lines(path)]


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _amount(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = float(value)
    except ValueError:
        return None
    return amount if math.isfinite(amount) and 0 < amount <= MAX_AMOUNT else None


def _reason(line: str, currency: str) -> Reason | None:
    """The contract's rejection reason for one line (duplicates aside), or None if valid."""
    try:
        record = json.loads(line)
    except ValueError:
        return Reason.MALFORMED
    if not isinstance(record, dict):
        return Reason.MALFORMED
    for field, reason in (
        ("order_id", Reason.MISSING_ORDER_ID),
        ("user_id", Reason.MISSING_USER_ID),
    ):
        value = record.get(field)
        if not isinstance(value, str) or not value:
            return reason
    if _amount(record.get("amount")) is None:
        return Reason.INVALID_AMOUNT
    if record.get("currency") != currency:
        return Reason.INVALID_CURRENCY
    if _timestamp(record.get("order_ts")) is None:
        return Reason.INVALID_TIMESTAMP
    return None


def _reasons(drop: DropSummary) -> Counter[str]:
    """Rejected lines per reason, duplicates counted as the contract's dedup would."""
    counts: Counter[str] = Counter({reason.value: 0 for reason in Reason})
    valid_ids: Counter[str] = Counter()
    for line in _drop_lines(drop):
        reason = _reason(line, REGION_CURRENCY[drop.region])
        if reason is None:
            valid_ids[json.loads(line)["order_id"]] += 1
        else:
            counts[reason.value] += 1
    counts[Reason.DUPLICATE.value] = sum(valid_ids.values()) - len(valid_ids)
    return counts


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate_landing(tmp_path / name, START, END, rows=300, seed=3, anomalies=True)
    generate_landing(tmp_path / "other_seed", START, END, rows=300, seed=4, anomalies=True)

    first = _files(tmp_path / "a")
    assert first == _files(tmp_path / "b")
    assert first.keys() == _files(tmp_path / "other_seed").keys()
    assert first != _files(tmp_path / "other_seed")


def test_a_drop_does_not_depend_on_what_else_is_generated(tmp_path: Path) -> None:
    full = generate_landing(tmp_path / "full", START, END, rows=200, seed=1)
    one = generate_landing(tmp_path / "one", END, END, rows=200, seed=1, regions=["ap-south"])

    assert [p.read_bytes() for p in one.paths] == [
        p.read_bytes() for p in full.drop(END, "ap-south").files
    ]


def test_layout_is_the_landing_contract(clean: GenerateSummary) -> None:
    days = [(START + timedelta(days=n)).isoformat() for n in range((END - START).days + 1)]
    assert [(d.order_date, d.region) for d in clean.drops] == [
        (day, region) for day in days for region in REGIONS
    ]
    for drop in clean.drops:
        directory = drop_path(clean.root, drop.order_date, drop.region)
        assert directory == clean.root / f"region={drop.region}" / f"date={drop.order_date}"
        assert (directory / SUCCESS_MARKER).read_bytes() == b""
        data = sorted(p for p in directory.iterdir() if p.name != SUCCESS_MARKER)
        assert data == list(drop.files)
        assert len(data) == 2
        assert all(p.suffix == LANDING_SUFFIX for p in data)
        assert len(_drop_lines(drop)) == drop.lines == ROWS
    assert clean.total_lines == ROWS * len(clean.drops)
    assert clean.paths == [p for d in clean.drops for p in d.files]


def test_clean_mode_is_valid_except_for_about_one_percent_duplicates(
    clean: GenerateSummary,
) -> None:
    for drop in clean.drops:
        reasons = _reasons(drop)
        duplicates = reasons.pop(Reason.DUPLICATE.value)
        assert sum(reasons.values()) == 0, reasons
        assert duplicates == drop.injected[Reason.DUPLICATE.value] == ROWS // 100
        assert drop.expected_orders == ROWS - duplicates
        assert set(drop.kinds) == {"duplicate:exact", "duplicate:late"}


def test_clean_records_look_real(clean: GenerateSummary) -> None:
    for drop in clean.drops:
        records = [json.loads(line) for line in _drop_lines(drop)]
        code = {"us-east": "USE", "us-west": "USW", "eu-west": "EUW", "ap-south": "APS"}
        compact = drop.order_date.replace("-", "")
        assert all(
            re.fullmatch(rf"ORD-{code[drop.region]}-{compact}-\d{{6}}", r["order_id"])
            for r in records
        )
        users = {r["user_id"] for r in records}
        orders = {r["order_id"] for r in records}
        assert 1 < len(users) < len(orders)

        currency = REGION_CURRENCY[drop.region]
        assert {r["currency"] for r in records} == {currency}
        kinds = {type(r["amount"]) for r in records}
        assert kinds == {float, str}
        assert all(
            re.fullmatch(r"\d+\.\d\d", str(r["amount"]))
            for r in records
            if isinstance(r["amount"], str)
        )
        median = statistics.median(float(r["amount"]) for r in records)
        assert AMOUNT_MEDIAN[currency] / 2 < median < AMOUNT_MEDIAN[currency] * 2


def test_every_order_ts_is_in_the_day_with_the_region_offset(clean: GenerateSummary) -> None:
    for drop in clean.drops:
        offset = REGION_UTC_OFFSET[drop.region]
        suffixes: set[str] = set()
        for line in _drop_lines(drop):
            raw = json.loads(line)["order_ts"]
            ts = _timestamp(raw)
            assert ts is not None, raw
            assert ts.date().isoformat() == drop.order_date
            suffixes.add(raw[19:])
        assert suffixes == ({"+00:00", "Z"} if drop.region == "eu-west" else {offset})


def test_redeliveries_keep_the_latest_and_the_last_in_agreement(clean: GenerateSummary) -> None:
    """The copy delivered later never has an earlier order_ts, so both dedup rules agree."""
    late = exact = 0
    for drop in clean.drops:
        seen: dict[str, list[str]] = defaultdict(list)
        for line in _drop_lines(drop):  # files in name order, lines in order: delivery order
            seen[json.loads(line)["order_id"]].append(line)
        for copies in (c for c in seen.values() if len(c) > 1):
            stamps = [_timestamp(json.loads(c)["order_ts"]) or NEVER for c in copies]
            assert NEVER not in stamps
            assert stamps == sorted(stamps)
            exact += copies[0] == copies[-1]
            late += copies[0] != copies[-1]
    assert exact > 0 and late > 0


def test_anomalies_mode_injects_each_kind_and_counts_it(dirty: GenerateSummary) -> None:
    seen_kinds: Counter[str] = Counter()
    for drop in dirty.drops:
        assert _reasons(drop) == drop.injected
        assert drop.lines == ROWS
        seen_kinds.update(drop.kinds)
        lines = _drop_lines(drop)
        assert "" in lines
        assert any(line.startswith("[") for line in lines)
    for reason, variants in ANOMALY_KINDS.items():
        for variant in variants:
            assert seen_kinds[f"{reason.value}:{variant}"] > 0, (reason, variant)
    # The byte-level defects (not UTF-8, over 1 MiB) are a broken export's, not a source system's
    # bad records: test_hostile_input.py writes them, the generator does not.
    for reason in set(Reason) - set(LINE_DEFECTS):
        share = sum(d.injected[reason.value] for d in dirty.drops) / dirty.total_lines
        assert 0.005 <= share <= 0.05, (reason, share)


def test_injected_empty_lines_sit_inside_their_file(tmp_path: Path) -> None:
    # Seed 174 deals an empty line last in the drop (and 215 last in the first of two files).
    for seed, at in ((174, 199), (215, 99)):
        lines, _ = build_drop(START, "us-east", 200, seed=seed, anomalies=True)
        assert lines[at] == ""  # guard: the case below is really exercised

        summary = generate_landing(tmp_path, START, START, 200, seed, True, ["us-east"])

        files = [_lines(path) for path in summary.paths]
        assert all(file and file[-1] != "" for file in files)
        assert sorted(line for file in files for line in file) == sorted(lines)


def test_regenerating_a_drop_replaces_its_files(tmp_path: Path) -> None:
    first = generate_landing(tmp_path, START, START, rows=50, regions=["us-east"], files_per_drop=3)
    again = generate_landing(tmp_path, START, START, rows=50, regions=["us-east"], files_per_drop=2)

    directory = drop_path(tmp_path, START.isoformat(), "us-east")
    assert len(first.paths) == 3
    assert set(directory.iterdir()) == {*again.paths, directory / SUCCESS_MARKER}
    assert sum(len(_lines(p)) for p in again.paths) == 50


def test_an_empty_drop_still_has_a_file_and_a_marker(tmp_path: Path) -> None:
    summary = generate_landing(tmp_path, START, START, rows=0, regions=["eu-west"])

    assert [p.read_bytes() for p in summary.paths] == [b""]
    assert (drop_path(tmp_path, START.isoformat(), "eu-west") / SUCCESS_MARKER).exists()


def test_write_drop_writes_the_file_then_the_marker(tmp_path: Path) -> None:
    lines = ['{"order_id": "A"}', "not json"]
    first = write_drop(tmp_path, START, "us-west", lines[:1], file_name="a.jsonl", success=False)
    marker = first.parent / SUCCESS_MARKER
    assert not marker.exists()

    second = write_drop(tmp_path, "2024-03-01", "us-west", lines[1:], file_name="b.jsonl")

    assert first.parent == second.parent == drop_path(tmp_path, START.isoformat(), "us-west")
    assert first.read_text() == lines[0] + "\n"
    assert second.read_text() == lines[1] + "\n"
    assert marker.read_bytes() == b""
    assert marker.stat().st_mtime_ns >= second.stat().st_mtime_ns
    assert sorted(p.name for p in first.parent.iterdir()) == [SUCCESS_MARKER, "a.jsonl", "b.jsonl"]


@pytest.mark.parametrize(
    ("lines", "file_name"),
    [(["two\nlines"], "a.jsonl"), (["cr\rline"], "a.jsonl"), (["{}"], "../escape.jsonl")],
)
def test_write_drop_refuses_what_would_break_the_layout(
    tmp_path: Path, lines: list[str], file_name: str
) -> None:
    with pytest.raises(ValueError):
        write_drop(tmp_path, START, "us-east", lines, file_name=file_name)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_landing(tmp_path, END, START)
    with pytest.raises(ContractError):
        generate_landing(tmp_path, START, START, regions=["mars-north"])
    with pytest.raises(ContractError):
        write_drop(tmp_path, "2024-02-30", "us-east", ["{}"])
