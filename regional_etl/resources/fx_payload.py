"""What goes over the wire to the FX service: request URLs, Frankfurter answers, error bodies,
Retry-After headers. Pure functions, no I/O: the client in `fx.py` does the HTTP."""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import json
import math
import urllib.error
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from regional_etl.resources.fx_errors import FXPermanentError

USD = "USD"
USD_PER_UNIT_QUANTUM = Decimal("0.0000000001")  # 10 decimal places, ROUND_HALF_UP


@dataclass(frozen=True)
class FxQuote:
    """USD value of one unit of each requested currency, as the service answered for a date."""

    requested_date: dt.date
    rate_date: dt.date  # the ECB business day the service used (on or before requested_date)
    usd_per_unit: dict[str, Decimal]  # 1/rate quantized to 10 places ROUND_HALF_UP; USD is 1
    attempts: int  # HTTP attempts this call made (1 = no retry)
    source_url: str

    @property
    def retries(self) -> int:
        return self.attempts - 1


def rates_url(base_url: str, date: dt.date, others: Sequence[str]) -> str:
    """`<base>/<date>?from=USD[&to=EUR,INR]`: the Frankfurter request for one date."""
    query = {"from": USD, **({"to": ",".join(others)} if others else {})}
    return f"{base_url}/{date.isoformat()}?{urllib.parse.urlencode(query, safe=',')}"


def latest_url(base_url: str) -> str:
    return f"{base_url}/latest?from={USD}"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), if usable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def error_detail(exc: urllib.error.HTTPError) -> str:
    """The service's own words for an HTTP error: its JSON `message`, else the start of the body."""
    try:
        raw = exc.read()
    except (OSError, http.client.HTTPException):
        return exc.reason if isinstance(exc.reason, str) else "no body"
    try:
        body = json.loads(raw.decode("utf-8"))
        if isinstance(body, dict) and "message" in body:
            return str(body["message"])
    except (UnicodeDecodeError, ValueError):
        pass
    return raw[:200].decode("utf-8", "replace") or str(exc.reason)


def decode_json(body: bytes, url: str, attempt: int) -> Any:
    """A 200 body as JSON; anything else is a permanent error (asking again will not fix it)."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FXPermanentError(
            f"FX service {url} returned a body that is not JSON: {body[:200]!r}",
            url=url,
            attempts=attempt,
        ) from exc


def normalize_currencies(currencies: Sequence[str]) -> list[str]:
    """Upper-case, de-duplicated ISO codes in request order; a clear error for anything else."""
    if isinstance(currencies, str):
        raise TypeError("currencies must be a sequence of codes, not one string")
    wanted: list[str] = []
    for code in currencies:
        normalized = code.strip().upper()
        if len(normalized) != 3 or not normalized.isalpha() or not normalized.isascii():
            raise ValueError(f"invalid currency code {code!r}")
        if normalized not in wanted:
            wanted.append(normalized)
    if not wanted:
        raise ValueError("no currencies requested")
    return wanted


def parse_rates(
    payload: Any, url: str, requested: dt.date | None, wanted: list[str]
) -> tuple[dt.date, dict[str, Decimal]]:
    """Check a Frankfurter answer and turn its rates (units per USD) into USD per unit."""

    def bad(what: str) -> FXPermanentError:
        return FXPermanentError(f"FX service {url} returned an unusable answer: {what}", url=url)

    if not isinstance(payload, dict):
        raise bad(f"expected a JSON object, got {type(payload).__name__}")
    if not isinstance(payload.get("rates"), dict) or not isinstance(payload.get("date"), str):
        raise bad(f"not the Frankfurter shape (needs 'date' and 'rates'): {str(payload)[:200]}")
    if payload.get("base", USD) != USD:
        raise bad(f"base is {payload.get('base')!r}, expected {USD}")
    try:
        rate_date = dt.date.fromisoformat(payload["date"])
    except ValueError as exc:
        raise bad(f"date {payload['date']!r} is not YYYY-MM-DD") from exc
    if requested is not None and rate_date > requested:
        raise bad(f"rate date {rate_date} is after the requested date {requested}")

    rates: dict[str, Any] = payload["rates"]
    missing = [code for code in wanted if code not in rates]
    if missing:
        raise bad(f"no rate for {', '.join(missing)}")
    usd_per_unit: dict[str, Decimal] = {}
    for code in wanted:
        rate = rates[code]
        # bool is an int in Python; a JSON true is not a rate.
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            raise bad(f"rate for {code} is {rate!r}, not a number")
        if rate <= 0:
            raise bad(f"rate for {code} is {rate!r}, not positive")
        usd_per_unit[code] = (Decimal(1) / Decimal(str(rate))).quantize(
            USD_PER_UNIT_QUANTUM, rounding=ROUND_HALF_UP
        )
    return rate_date, usd_per_unit
