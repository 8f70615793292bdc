"""The pure Spark transforms, on hand-made lines: one reason per line, in contract order."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from regional_etl.contract import Table, schema
from regional_etl.generate import write_drop
from regional_etl.io.landing import count_lines, read_drops, ready_drop
from regional_etl.partitions import DateRegion
from regional_etl.transforms.orders import classify, convert, quarantine_rows, valid_orders

DAY = "2024-03-08"
TS = "2024-03-08T10:00:00+01:00"


def line(**overrides: object) -> str:
    record = {"order_id": "A1", "user_id": "u1", "amount": 10, "currency": "EUR", "order_ts": TS}
    record.update(overrides)
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def classified(spark, tmp_path, files: dict[str, list[str]], region: str = "eu-west"):
    for name, lines in files.items():
        write_drop(tmp_path, DAY, region, lines, file_name=name)
    drop = ready_drop(tmp_path, DateRegion(DAY, region))
    return classify(read_drops(spark, tmp_path, [drop])), drop


def reasons(df) -> dict[tuple[str, int], str | None]:
    return {
        (r.source_file.rsplit("/", 1)[1], r.line_number): r.reason
        for r in df.select("source_file", "line_number", "reason").collect()
    }


CASES = [
    ("not json", "malformed"),
    ("[1, 2]", "malformed"),
    ('"a string"', "malformed"),
    ("", "malformed"),
    ('{"order_id": "A1",', "malformed"),
    (line(order_id=None), "missing_order_id"),
    (line(order_id=...), "missing_order_id"),
    (line(order_id="  "), "missing_order_id"),
    (line(order_id=None, user_id=None), "missing_order_id"),
    (line(user_id=""), "missing_user_id"),
    (line(user_id=None, amount="abc"), "missing_user_id"),
    (line(amount="abc"), "invalid_amount"),
    (line(amount=0), "invalid_amount"),
    (line(amount=-5), "invalid_amount"),
    (line(amount=1_000_000.01), "invalid_amount"),
    (line(amount=None), "invalid_amount"),
    (
        '{"order_id":"A1","user_id":"u","amount":NaN,"currency":"EUR","order_ts":"' + TS + '"}',
        "invalid_amount",
    ),
    (line(amount="Infinity"), "invalid_amount"),
    (line(amount=-1, currency="USD"), "invalid_amount"),
    (line(currency="USD"), "invalid_currency"),
    (line(currency="eur"), "invalid_currency"),
    (line(currency=None), "invalid_currency"),
    (line(currency="USD", order_ts="garbage"), "invalid_currency"),
    (line(order_ts="2024-03-08T10:00:00"), "invalid_timestamp"),
    (line(order_ts="2024-03-08"), "invalid_timestamp"),
    (line(order_ts="2024-02-30T10:00:00Z"), "invalid_timestamp"),
    (line(order_ts=None), "invalid_timestamp"),
    (line(amount="1000000"), None),
    (line(amount="12.50"), None),
    (line(amount=1e3), None),
    (line(order_ts="2024-03-08T10:00:00.123456Z"), None),
]


def test_each_line_gets_the_first_reason_that_applies(spark, tmp_path) -> None:
    # One partition per case: unique order ids keep duplicates out of the picture.
    lines = []
    for n, (text, _) in enumerate(CASES):
        lines.append(text.replace('"A1"', f'"A{n}"') if text.startswith("{") else text)
    df, drop = classified(spark, tmp_path, {"a.jsonl": lines})
    got = reasons(df)
    want = {("a.jsonl", n + 1): reason for n, (_, reason) in enumerate(CASES)}
    assert got == want
    assert count_lines([drop]) == len(CASES) == df.count()


def test_duplicates_keep_the_latest_then_the_last_delivered(spark, tmp_path) -> None:
    early, late = "2024-03-08T09:00:00Z", "2024-03-08T11:00:00Z"
    df, _ = classified(
        spark,
        tmp_path,
        {
            "a.jsonl": [
                line(order_id="X", order_ts=late, amount=1),  # latest ts: kept over b's lines
                line(order_id="Y", order_ts=early, amount=1),
                line(order_id="Y", order_ts=early, amount=2),  # tie in a: later line wins...
                line(order_id="Z", order_ts="garbage"),  # invalid lines do not compete
            ],
            "b.jsonl": [
                line(order_id="X", order_ts=early, amount=3),
                line(order_id="Y", order_ts=early, amount=4),  # ...but later file wins the tie
                line(order_id="Z", order_ts=early, amount=5),
            ],
        },
    )
    assert reasons(df) == {
        ("a.jsonl", 1): None,
        ("a.jsonl", 2): "duplicate",
        ("a.jsonl", 3): "duplicate",
        ("a.jsonl", 4): "invalid_timestamp",
        ("b.jsonl", 1): "duplicate",
        ("b.jsonl", 2): None,
        ("b.jsonl", 3): None,
    }
    kept = {r.order_id: r.amount for r in df.where("reason IS NULL").collect()}
    assert kept == {"X": Decimal("1.0000"), "Y": Decimal("4.0000"), "Z": Decimal("5.0000")}


def test_line_numbers_trailing_newline_blank_lines_and_empty_files(spark, tmp_path) -> None:
    folder = tmp_path / "region=us-east" / f"date={DAY}"
    folder.mkdir(parents=True)
    ok = line(currency="USD")
    (folder / "a.jsonl").write_text(f"{ok}\n\n{ok}\r\n")  # blank middle line, CRLF ending
    (folder / "b.jsonl").write_text(ok)  # no trailing newline
    (folder / "c.jsonl").write_text("")  # empty: no lines at all
    (folder / "_SUCCESS").touch()
    drop = ready_drop(tmp_path, DateRegion(DAY, "us-east"))
    bronze = read_drops(spark, tmp_path, [drop])
    got = sorted((r.source_file, r.line_number, r.value) for r in bronze.collect())
    prefix = f"region=us-east/date={DAY}/"
    assert got == [
        (prefix + "a.jsonl", 1, ok),
        (prefix + "a.jsonl", 2, ""),
        (prefix + "a.jsonl", 3, ok),
        (prefix + "b.jsonl", 1, ok),
    ]
    assert count_lines([drop]) == 4
    assert {r.order_date for r in bronze.collect()} == {dt.date(2024, 3, 8)}


@pytest.mark.parametrize(
    ("amount", "rate", "usd"),
    [
        ("0.125", "1", "0.13"),  # half-up, not banker's rounding
        ("2.675", "1", "2.68"),  # exact decimal, not the binary float 2.67499...
        ("100", "0.0120482313", "1.20"),
        ("4123.45", "0.0120482313", "49.68"),
    ],
)
def test_usd_conversion_rounds_half_up_to_the_cent(spark, amount, rate, usd) -> None:
    day = dt.date(2024, 3, 8)
    lines = spark.createDataFrame(
        [(day, "INR", Decimal(amount), None)],
        "order_date date, currency string, amount decimal(18,4), reason string",
    )
    fx = spark.createDataFrame([(day, "INR", Decimal(rate))], schema(Table.FX_RATES))
    out = convert(lines, fx).collect()[0]
    assert out.amount_usd == Decimal(usd)
    assert out.fx_rate == Decimal(rate)


def test_outputs_have_the_contract_columns(spark, tmp_path) -> None:
    df, _ = classified(spark, tmp_path, {"a.jsonl": [line(), "bad"]})
    fx = spark.createDataFrame(
        [(dt.date(2024, 3, 8), "EUR", Decimal("1.0850000000"))], schema(Table.FX_RATES)
    )
    orders = valid_orders(convert(df, fx), "run-1")
    quarantine = quarantine_rows(df, "run-1")
    assert orders.columns == schema(Table.ORDERS).fieldNames()
    assert quarantine.columns == schema(Table.ORDERS_QUARANTINE).fieldNames()
    assert [r.reason for r in quarantine.collect()] == ["malformed"]
    assert orders.collect()[0].amount_usd == Decimal("10.85")


def test_silver_frames_split_every_line_into_orders_or_quarantine(spark, tmp_path) -> None:
    from regional_etl.transforms.silver import silver_frames

    write_drop(tmp_path, DAY, "eu-west", [line(), line(), line(order_id="B2"), "bad"])
    bronze = read_drops(spark, tmp_path, [ready_drop(tmp_path, DateRegion(DAY, "eu-west"))])
    fx = spark.createDataFrame(
        [(dt.date(2024, 3, 8), "EUR", Decimal("1.0850000000"))], schema(Table.FX_RATES)
    )
    frames = silver_frames(bronze, fx, "run-1")
    assert frames.orders.columns == schema(Table.ORDERS).fieldNames()
    assert sorted(r.order_id for r in frames.orders.collect()) == ["A1", "B2"]
    assert sorted(r.reason for r in frames.quarantine.collect()) == ["duplicate", "malformed"]
    [stats] = frames.gate_stats.collect()
    assert (stats.lines, stats.orders, stats.quarantined) == (4, 2, 2)
    assert stats.distinct_order_ids == 2


def test_line_defects_are_their_lines_reasons_whatever_the_file_is_called(spark, tmp_path) -> None:
    """A line that is not UTF-8 or is over the line limit is quarantined with its own reason,
    also in a file whose name Spark spells differently (as a URI: a space, '%', '+'), and its
    neighbours are orders."""
    from regional_etl.contract import MAX_LINE_BYTES

    folder = tmp_path / "region=eu-west" / f"date={DAY}"
    folder.mkdir(parents=True)
    good, other = line(order_id="G1").encode(), line(order_id="G2").encode()
    latin1 = line(order_id="L1", user_id="Jos\u00e9").replace("\\u00e9", "\u00e9")
    long_line = line(order_id="X1", note="x" * MAX_LINE_BYTES).encode()
    for name in ("plain.jsonl", "a b+c%d.jsonl"):
        (folder / name).write_bytes(
            b"\n".join([good, latin1.encode("latin-1"), long_line, other]) + b"\n"
        )
        good, other = line(order_id="G3").encode(), line(order_id="G4").encode()
    (folder / "_SUCCESS").write_bytes(b"")
    drop = ready_drop(tmp_path, DateRegion(DAY, "eu-west"))
    bronze = read_drops(spark, tmp_path, [drop])
    got = reasons(classify(bronze))
    # Bronze keeps Spark's spelling of the name, as it always has.
    for name in ("plain.jsonl", "a%20b+c%25d.jsonl"):
        assert (got[(name, 2)], got[(name, 3)]) == ("invalid_encoding", "line_too_long"), name
        assert got[(name, 1)] is None and got[(name, 4)] is None, name
    kept = {(r.line_number, r.defect): (r.value, r.line_bytes) for r in bronze.collect()}
    assert kept[(2, "invalid_encoding")][0] == latin1.encode("latin-1").decode(errors="replace")
    assert len(kept[(3, "line_too_long")][0].encode()) == 1024
    assert kept[(3, "line_too_long")][1] == len(long_line)
    assert count_lines([drop]) == bronze.count() == 8
