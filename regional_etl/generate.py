"""A deterministic synthetic landing zone: order drops for local runs, tests and benchmarks.

The layout follows the landing contract: ``region=<region>/date=<YYYY-MM-DD>/*.jsonl`` plus an
empty ``_SUCCESS`` marker written last. Every drop draws from its own ``random.Random`` seeded by
``(seed, date, region)``, so the same arguments give byte-identical files and generating a subset
of dates or regions gives the same drops as generating them all.

Each drop is one day of orders in time order, split into a few files. About 1% of the lines are
redeliveries of an earlier order (an exact copy, or a late copy with a later ``order_ts``), because
duplicates happen in normal life. With ``anomalies=True`` a few percent of the lines additionally
break exactly one rule of the contract each, so a reader's rejection counts can be checked against
`DropSummary.injected` line for line. Anomaly lines carry order ids of their own and are never
redelivered: a line is rejected for its one injected reason and nothing else.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path

from regional_etl.contract import (
    CURRENCIES,
    LANDING_SUFFIX,
    MAX_AMOUNT,
    REGION_CURRENCY,
    REGIONS,
    SUCCESS_MARKER,
    Reason,
    drop_path,
    validate_region,
)
from regional_etl.io.files import atomic_write

# Standard-time offsets. Daylight saving is ignored on purpose: one constant offset per region is
# something a test can assert, and the pipeline must accept any offset anyway.
REGION_UTC_OFFSET: dict[str, str] = {
    "us-east": "-05:00",
    "us-west": "-08:00",
    "eu-west": "+00:00",
    "ap-south": "+05:30",
}

# Order values are lognormal around a per-currency median; sigma 0.9 gives a long but bounded tail
# (the largest of 3M INR draws stays far below MAX_AMOUNT).
AMOUNT_MEDIAN: dict[str, float] = {"USD": 60.0, "EUR": 55.0, "INR": 4000.0}
_AMOUNT_SIGMA = 0.9
# Upstream systems disagree on amount types: a share of the lines quote the amount as a string.
_STRING_AMOUNT_SHARE = 0.25
# eu-west sources write UTC either as "+00:00" or as "Z".
_ZULU_SHARE = 0.5
_SECONDS_PER_DAY = 86_400

DUPLICATE_RATE = 0.01

# Share of a drop's lines injected per rejection reason when anomalies=True. Variants are dealt
# round-robin, so a drop of 200 lines or more holds every variant of every reason.
ANOMALY_RATES: dict[Reason, float] = {
    Reason.MALFORMED: 0.02,
    Reason.MISSING_ORDER_ID: 0.02,
    Reason.MISSING_USER_ID: 0.02,
    Reason.INVALID_AMOUNT: 0.03,
    Reason.INVALID_CURRENCY: 0.02,
    Reason.INVALID_TIMESTAMP: 0.02,
}
ANOMALY_KINDS: dict[Reason, tuple[str, ...]] = {
    Reason.MALFORMED: ("truncated", "plain_text", "json_array", "empty_line"),
    Reason.MISSING_ORDER_ID: ("null", "absent", "empty"),
    Reason.MISSING_USER_ID: ("null", "absent", "empty"),
    Reason.INVALID_AMOUNT: ("negative", "zero", "over_max", "not_numeric", "null", "nan"),
    Reason.INVALID_CURRENCY: ("other_region", "unknown"),
    Reason.INVALID_TIMESTAMP: ("no_offset", "date_only", "garbage"),
}
_PLAIN_TEXT = (
    "upstream timeout, retrying",
    "order_id,user_id,amount,currency,order_ts",
    "<html><body>502 Bad Gateway</body></html>",
)
_UNKNOWN_CURRENCIES = ("GBP", "JPY", "CHF")
_GARBAGE_TIMESTAMPS = ("not a timestamp", "31/02/2024 25:61", "2024-13-45T99:99:99+00:00")

DEFAULT_FILE_NAME = "part-00000" + LANDING_SUFFIX


@dataclass(frozen=True)
class DropSummary:
    """What was written for one (date, region) drop, for tests to cross-check a reader against."""

    order_date: str
    region: str
    lines: int
    files: tuple[Path, ...]
    # Lines per rejection reason (every Reason value is a key, zero included). "duplicate" counts
    # the extra deliveries: lines - sum(injected) distinct valid orders remain after dedup.
    injected: dict[str, int]
    # Finer detail, "reason:variant" -> lines, e.g. "invalid_amount:nan" or "duplicate:late".
    kinds: dict[str, int]

    @property
    def expected_orders(self) -> int:
        """Valid, distinct orders a correct reader keeps from this drop."""
        return self.lines - sum(self.injected.values())


@dataclass(frozen=True)
class GenerateSummary:
    """Every drop written by one `generate_landing` call, in (date, region) order."""

    root: Path
    drops: tuple[DropSummary, ...]

    @property
    def total_lines(self) -> int:
        return sum(drop.lines for drop in self.drops)

    @property
    def paths(self) -> list[Path]:
        """All data files written, drop by drop, in delivery (file name) order."""
        return [path for drop in self.drops for path in drop.files]

    def drop(self, order_date: date | str, region: str) -> DropSummary:
        """The summary of one drop; KeyError if this call did not write it."""
        wanted = (str(order_date), region)
        for summary in self.drops:
            if (summary.order_date, summary.region) == wanted:
                return summary
        raise KeyError(wanted)


def write_drop(
    root: Path,
    order_date: date | str,
    region: str,
    lines: Iterable[str],
    file_name: str = DEFAULT_FILE_NAME,
    success: bool = True,
) -> Path:
    """Write one landing file of a drop as given, then mark the drop complete if `success`.

    For hand-made drops in tests: call it once per file, with ``success=False`` for all but the
    last. Lines are written verbatim (no validation beyond "one line each"), other files of the
    drop are left alone, and an existing ``_SUCCESS`` is re-touched, not removed.
    """
    if not file_name or Path(file_name).name != file_name:
        raise ValueError(f"file_name must be a plain file name, got {file_name!r}")
    lines = list(lines)
    for number, line in enumerate(lines, start=1):
        # Spark's line reader splits on \r as well as \n: either would silently add lines.
        if "\n" in line or "\r" in line:
            raise ValueError(f"line {number} contains a line break")
    directory = drop_path(root, str(order_date), region)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name
    _write_lines(path, lines)
    if success:
        _touch_marker(directory)
    return path


def generate_landing(
    root: Path,
    start: date,
    end: date,
    rows: int = 1000,
    seed: int = 0,
    anomalies: bool = False,
    regions: Sequence[str] = REGIONS,
    files_per_drop: int = 2,
) -> GenerateSummary:
    """Write one complete drop per day in ``[start, end]`` and region, `rows` lines each.

    Regenerating a drop first removes its ``_SUCCESS`` (so a reader sees it as incomplete while
    it changes), replaces its ``.jsonl`` files (stale ones from a previous call included) and then
    writes the marker again.
    """
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if files_per_drop < 1:
        raise ValueError(f"files_per_drop must be >= 1, got {files_per_drop}")
    regions = list(dict.fromkeys(validate_region(region) for region in regions))
    days = [start + timedelta(days=offset) for offset in range((end - start).days + 1)]
    drops: list[DropSummary] = []
    for day in days:
        for region in regions:
            lines, kinds = build_drop(day, region, rows, seed=seed, anomalies=anomalies)
            files = _replace_drop(root, day, region, lines, files_per_drop)
            drops.append(_summarize(day, region, len(lines), files, kinds))
    return GenerateSummary(root=Path(root), drops=tuple(drops))


def build_drop(
    order_date: date, region: str, rows: int, seed: int = 0, anomalies: bool = False
) -> tuple[list[str], Counter[str]]:
    """The lines of one drop in delivery order, and the injected "reason:variant" counts.

    Pure and deterministic: no I/O, one ``random.Random`` seeded by (seed, date, region).
    """
    currency = REGION_CURRENCY[validate_region(region)]
    rng = random.Random(f"{seed}|{order_date.isoformat()}|{region}")
    planned = _plan(rows, anomalies)
    n_dup = planned.pop(Reason.DUPLICATE)
    first = rows - n_dup  # first deliveries; the duplicates are copies of some of them
    rand = rng.random  # bound methods as locals: the loop below runs once per line
    seconds = sorted(int(rand() * _SECONDS_PER_DAY) for _ in range(first))
    anomaly_at = _place_anomalies(rng, first, planned)
    originals = set(rng.sample([i for i in range(first) if i not in anomaly_at], n_dup))

    code = _region_code(region)
    prefix, width = f"ORD-{code}-{order_date:%Y%m%d}-", max(6, len(str(rows)))
    user_prefix = f"USR-{code}-"
    # A region's users are the same people every day. The pool is a third of a day's orders, and a
    # mildly skewed pick (r ** 1.3) makes the low ids regulars without one user owning the day.
    pool = max(1, rows // 3)
    day, clock, offset = f"{order_date.isoformat()}T", _clock(), REGION_UTC_OFFSET[region]
    zulu = offset == "+00:00"
    gauss, exp, mu = rng.gauss, math.exp, math.log(AMOUNT_MEDIAN.get(currency, 50.0))

    lines: list[str] = []
    kinds: Counter[str] = Counter()
    redeliveries: dict[int, list[str]] = {}
    for i in range(first):
        order_id = f"{prefix}{i + 1:0{width}d}"
        user_id = f"{user_prefix}{int(pool * rand() ** 1.3):06d}"
        amount = min(max(exp(gauss(mu, _AMOUNT_SIGMA)), 0.01), MAX_AMOUNT)
        amount_text = f'"{amount:.2f}"' if rand() < _STRING_AMOUNT_SHARE else f"{amount:.2f}"
        suffix = "Z" if zulu and rand() < _ZULU_SHARE else offset
        ts = f"{day}{clock[seconds[i]]}{suffix}"
        if i in anomaly_at:
            reason, variant = anomaly_at[i]
            record: dict[str, object] = {
                "order_id": order_id,
                "user_id": user_id,
                "amount": round(amount, 2),
                "currency": currency,
                "order_ts": ts,
            }
            lines.append(_break_record(record, reason, variant, rng))
            kinds[f"{reason.value}:{variant}"] += 1
            continue
        line = _order_line(order_id, user_id, amount_text, currency, ts)
        lines.append(line)
        if i in originals:
            # Redelivered later in the feed: as is, or as a late update with a later order_ts.
            late = min(seconds[i] + rng.randint(60, 7200), _SECONDS_PER_DAY - 1)
            if rand() < 0.5 and late > seconds[i]:
                ts = f"{day}{clock[late]}{suffix}"
                line = _order_line(order_id, user_id, amount_text, currency, ts)
                kinds[f"{Reason.DUPLICATE.value}:late"] += 1
            else:
                kinds[f"{Reason.DUPLICATE.value}:exact"] += 1
            redeliveries.setdefault(rng.randint(i, first - 1), []).append(line)
    return (_interleave(lines, redeliveries) if redeliveries else lines), kinds


def _place_anomalies(
    rng: random.Random, first: int, planned: dict[Reason, int]
) -> dict[int, tuple[Reason, str]]:
    """Which first-delivery lines break which rule, variants dealt round-robin per reason."""
    anomaly_at: dict[int, tuple[Reason, str]] = {}
    picked = iter(rng.sample(range(first), sum(planned.values())))
    for reason, count in planned.items():
        variants = ANOMALY_KINDS[reason]
        for n in range(count):
            anomaly_at[next(picked)] = (reason, variants[n % len(variants)])
    return anomaly_at


def _plan(rows: int, anomalies: bool) -> dict[Reason, int]:
    """Lines per reason for a drop of `rows` lines; the rest are clean first deliveries."""
    planned: dict[Reason, int] = {}
    if anomalies:
        planned = {reason: round(rows * rate) for reason, rate in ANOMALY_RATES.items()}
    planned[Reason.DUPLICATE] = round(rows * DUPLICATE_RATE)
    # The rates sum to 14%, so there are always more clean originals than duplicates to copy.
    assert rows - planned[Reason.DUPLICATE] - sum(planned.values()) >= 0
    return planned


def _interleave(lines: list[str], after: dict[int, list[str]]) -> list[str]:
    """Insert each redelivery after the first-delivery line whose index it is keyed by."""
    merged: list[str] = []
    for i, line in enumerate(lines):
        merged.append(line)
        merged.extend(after.get(i, ()))
    return merged


def _order_line(order_id: str, user_id: str, amount_text: str, currency: str, ts: str) -> str:
    # Formatted by hand rather than with json.dumps: it runs once per line, and every value is
    # plain ASCII that needs no escaping.
    return (
        f'{{"order_id": "{order_id}", "user_id": "{user_id}", "amount": {amount_text}, '
        f'"currency": "{currency}", "order_ts": "{ts}"}}'
    )


@cache
def _clock() -> tuple[str, ...]:
    """The clock time of every second of a day: one lookup per line instead of two divmods."""
    return tuple(
        f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)
    )


def _break_record(
    record: dict[str, object], reason: Reason, variant: str, rng: random.Random
) -> str:
    """One line that breaks exactly one contract rule: `reason`, in the way `variant` says."""
    if reason is Reason.MALFORMED:
        valid = json.dumps(record)
        if variant == "truncated":  # any strict prefix of an object is invalid JSON
            return valid[: rng.randint(1, len(valid) - 1)]
        if variant == "plain_text":
            return rng.choice(_PLAIN_TEXT)
        if variant == "json_array":  # valid JSON holding a valid order, but not an object
            return f"[{valid}]"
        return ""  # empty_line
    field = {
        Reason.MISSING_ORDER_ID: "order_id",
        Reason.MISSING_USER_ID: "user_id",
        Reason.INVALID_AMOUNT: "amount",
        Reason.INVALID_CURRENCY: "currency",
        Reason.INVALID_TIMESTAMP: "order_ts",
    }[reason]
    if variant == "absent":
        del record[field]
    else:
        record[field] = _bad_value(reason, variant, record, rng)
    return json.dumps(record)


def _bad_value(
    reason: Reason, variant: str, record: dict[str, object], rng: random.Random
) -> object:
    if variant == "null":
        return None
    if variant == "empty":
        return ""
    if reason is Reason.INVALID_AMOUNT:
        amount = float(str(record["amount"]))
        return {
            "negative": rng.choice((-amount, f"-{amount:.2f}")),
            "zero": rng.choice((0, 0.0, "0.00")),
            "over_max": rng.choice((MAX_AMOUNT + 0.01, MAX_AMOUNT * 25, f"{MAX_AMOUNT * 3}.00")),
            "not_numeric": rng.choice(("abc", "12,50", "")),
            "nan": rng.choice(("NaN", "Infinity")),
        }[variant]
    if reason is Reason.INVALID_CURRENCY:
        others = [code for code in CURRENCIES if code != record["currency"]]
        return rng.choice(others if variant == "other_region" and others else _UNKNOWN_CURRENCIES)
    # Reason.INVALID_TIMESTAMP: the same local time without its offset, or no time at all.
    local = str(record["order_ts"])[:19]
    if variant == "no_offset":
        return local
    if variant == "date_only":
        return local[:10]
    return rng.choice(_GARBAGE_TIMESTAMPS)


def _region_code(region: str) -> str:
    """A short code for ids: us-east -> USE, eu-west -> EUW, ap-south -> APS."""
    first, *rest = region.split("-")
    return (first[:2] + "".join(part[:1] for part in rest)).upper()


def _replace_drop(
    root: Path, day: date, region: str, lines: list[str], files_per_drop: int
) -> tuple[Path, ...]:
    directory = drop_path(root, day.isoformat(), region)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SUCCESS_MARKER).unlink(missing_ok=True)
    chunks = _split(lines, files_per_drop)
    names = [f"part-{n:05d}{LANDING_SUFFIX}" for n in range(len(chunks))]
    for stale in directory.glob(f"*{LANDING_SUFFIX}"):
        if stale.name not in names:
            stale.unlink()
    paths = []
    for name, chunk in zip(names, chunks, strict=True):
        path = directory / name
        _write_lines(path, chunk)
        paths.append(path)
    _touch_marker(directory)
    return tuple(paths)


def _split(lines: list[str], parts: int) -> list[list[str]]:
    """Contiguous chunks of near-equal size; empty chunks dropped, but always at least one file."""
    size, extra = divmod(len(lines), parts)
    chunks: list[list[str]] = []
    begin = 0
    for n in range(parts):
        end = begin + size + (1 if n < extra else 0)
        if end > begin:
            chunks.append(_blank_lines_inside(lines[begin:end]))
        begin = end
    return chunks or [[]]


def _blank_lines_inside(chunk: list[str]) -> list[str]:
    """Move trailing empty lines before the last non-empty one.

    An empty line at the very end of a file is indistinguishable from a trailing newline for some
    readers; an injected empty line must be counted, so it has to sit inside the file.
    """
    last = len(chunk)
    while last > 0 and chunk[last - 1] == "":
        last -= 1
    if last in (0, len(chunk)):
        return chunk
    return [*chunk[: last - 1], *chunk[last:], chunk[last - 1]]


def _write_lines(path: Path, lines: list[str]) -> None:
    # A reader (a sensor, a run) lists a drop while it is written: `atomic_write`'s temporary
    # file is dot-prefixed, so no *.jsonl glob and no Spark listing sees it half-written.
    atomic_write(path, "".join(f"{line}\n" for line in lines))


def _touch_marker(directory: Path) -> None:
    # Rewritten rather than Path.touch(): the marker must be empty, and its mtime must move so a
    # sensor that compares mtimes notices a redelivered drop.
    (directory / SUCCESS_MARKER).write_bytes(b"")


def _summarize(
    day: date, region: str, lines: int, files: tuple[Path, ...], kinds: Counter[str]
) -> DropSummary:
    injected = {reason.value: 0 for reason in Reason}
    for kind, count in kinds.items():
        injected[kind.split(":", 1)[0]] += count
    return DropSummary(
        order_date=day.isoformat(),
        region=region,
        lines=lines,
        files=files,
        injected=injected,
        kinds=dict(sorted(kinds.items())),
    )
