"""The FX client: a Frankfurter-compatible service over HTTP, with retries and the shared breaker.

A call makes up to `max_attempts` HTTP attempts, retrying only what may pass (timeouts,
connection errors, 5xx, 429). A call that used them all up raises `FXTransientError` and is ONE
failure for the circuit breaker, which counts calls that failed in a row. Anything else the
service says will not get better by asking again: `FXPermanentError` at once.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from dagster import get_dagster_logger

from regional_etl.fx.breaker import SharedBreaker
from regional_etl.fx.errors import FXPermanentError, FXTransientError
from regional_etl.fx.rates import USD, FxQuote, usd_per_unit
from regional_etl.io import http_retry


def parse_rates(
    body: str, url: str, attempts: int, asked: dt.date | None, wanted: Sequence[str]
) -> tuple[dt.date, dict[str, Decimal]]:
    """Check a Frankfurter answer and turn its rates (units per USD) into USD per unit."""

    def bad(what: str) -> FXPermanentError:
        return FXPermanentError(f"FX service {url} returned an unusable answer: {what}", attempts)

    try:
        payload = json.loads(body, parse_float=Decimal, parse_int=Decimal)
        rates, rate_date = dict(payload["rates"]), dt.date.fromisoformat(payload["date"])
    except (ValueError, KeyError, TypeError):
        raise bad(f"not the Frankfurter shape ('date', 'rates'): {body[:200]!r}") from None
    if payload.get("base", USD) != USD or (asked and rate_date > asked):
        raise bad(f"base {payload.get('base')!r} on {rate_date} does not answer {USD} on {asked}")
    try:
        return rate_date, usd_per_unit(rates, wanted, rate_date)
    except ValueError as exc:
        raise bad(str(exc)) from None


@dataclass
class FrankfurterClient:
    """The FX service at `base_url`: every call under the shared circuit breaker, every request
    through `http_retry.send` (requests with urllib3's `Retry`)."""

    base_url: str
    breaker: SharedBreaker
    timeout_seconds: float
    max_attempts: int
    backoff_base_seconds: float
    backoff_max_seconds: float
    attempt_count: int = 0  # HTTP attempts made so far
    retry_count: int = 0  # of those, attempts after a transient failure

    def get_usd_rates(self, date: dt.date, wanted: Sequence[str]) -> FxQuote:
        others = [code for code in wanted if code != USD]
        url = f"{self.base_url}/{date}?from={USD}" + (f"&to={','.join(others)}" if others else "")
        body, attempts = self.breaker.call_service(url, self._get, self.max_attempts)
        return FxQuote(*parse_rates(body, url, attempts, date, wanted), attempts, url)

    def latest_rate_date(self) -> dt.date:
        url = f"{self.base_url}/latest?from={USD}"
        body, attempts = self.breaker.call_service(url, self._get, self.max_attempts)
        return parse_rates(body, url, attempts, None, [])[0]

    def _get(self, url: str, attempts: int) -> tuple[str, int]:
        """The body of a GET of up to `attempts` HTTP attempts, and how many it took. The breaker
        calls this; the body is checked afterwards, since any answer means the service is up."""
        result = http_retry.send(
            "GET",
            url,
            what=f"FX request {url}",
            log=get_dagster_logger(),
            attempts=attempts,
            timeout=self.timeout_seconds,
            backoff_seconds=self.backoff_base_seconds,
            backoff_max_seconds=self.backoff_max_seconds,
            headers={"Accept": "application/json"},
        )
        self.attempt_count += result.attempts
        self.retry_count += result.attempts - 1
        if result.transient or result.response is None:
            raise FXTransientError(
                f"FX service {url} failed {result.attempts} attempt(s); last error: "
                f"{result.failure}",
                result.attempts,
            )
        if result.failure:
            raise FXPermanentError(
                f"FX service {url} answered {result.failure}",
                result.attempts,
                result.response.status_code,
            )
        return result.response.text, result.attempts
