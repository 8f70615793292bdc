"""The FX-rate client resource: Frankfurter over HTTP, with retries and a shared breaker.

A call makes up to `max_attempts` HTTP attempts, retrying only what may pass (timeouts,
connection errors, 5xx, 429). A call that used them all up raises `FXTransientError` and is ONE
failure for the circuit breaker, which counts calls that failed in a row. Anything else the
service says will not get better by asking again: `FXPermanentError` at once.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from dagster import ConfigurableResource, InitResourceContext, get_dagster_logger
from pydantic import Field, PrivateAttr

from regional_etl.io import http_retry as http
from regional_etl.fx.server import FXServer
from regional_etl.resources.fx_breaker import BreakerTransition, SharedBreaker

# The client's errors, for callers that catch them where they get the resource.
from regional_etl.resources.fx_errors import FXCircuitOpenError as FXCircuitOpenError
from regional_etl.resources.fx_errors import FXError as FXError
from regional_etl.resources.fx_errors import FXPermanentError, FXTransientError

USD = "USD"
USD_PER_UNIT_QUANTUM = Decimal("0.0000000001")


@dataclass(frozen=True)
class FxQuote:
    """USD value of one unit of each requested currency, as the service answered for a date."""

    rate_date: dt.date  # the ECB business day the service used (on or before the asked date)
    usd_per_unit: dict[str, Decimal]  # 1/rate quantized to 10 places ROUND_HALF_UP; USD is 1
    attempts: int  # HTTP attempts this call made (1 = no retry)
    source_url: str


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
    usd_per_unit: dict[str, Decimal] = {}
    for code in wanted:
        if code not in rates:
            raise bad(f"no rate for {code} in the answer for {rate_date}")
        rate = rates[code]
        if not isinstance(rate, Decimal) or not rate.is_finite() or rate <= 0:
            raise bad(f"rate for {code} on {rate_date} is {rate}, not a positive number")
        usd_per_unit[code] = (1 / rate).quantize(USD_PER_UNIT_QUANTUM, ROUND_HALF_UP)
    return rate_date, usd_per_unit


class FXRatesResource(ConfigurableResource):
    """Daily FX rates (USD per unit of a currency) from a Frankfurter-compatible HTTP service,
    with retries and a circuit breaker that every run process shares. With no `base_url` the
    bundled ECB history is served on a free 127.0.0.1 port for the run."""

    base_url: str | None = Field(
        default=None,
        description="Frankfurter-compatible FX API, e.g. https://api.frankfurter.app. Unset: "
        "serve the bundled ECB history on a free 127.0.0.1 port for the run.",
    )
    timeout_seconds: float = Field(default=5.0, gt=0, description="Per connect and per read.")
    max_attempts: int = Field(default=4, ge=1, description="HTTP attempts per call, at most.")
    backoff_base_seconds: float = Field(
        default=1.0, ge=0, description="Retry n waits this x 2^(n-1) (the 1st none), + 0..this."
    )
    backoff_max_seconds: float = Field(
        default=60.0, ge=0, description="Upper bound of any single wait, Retry-After included."
    )
    breaker_fail_max: int = Field(
        default=5, ge=1, description="Failed calls in a row (each after its retries) that open it."
    )
    breaker_reset_timeout_seconds: float = Field(
        default=60.0, ge=0, description="How long the breaker stays open before a probe."
    )
    breaker_storage_url: str | None = Field(
        default=None,
        description="Breaker state shared by run processes: sqlite:///<path> or redis://host:"
        "port/db ('redis' extra). Unset: sqlite under $DAGSTER_HOME (or the temp dir).",
    )

    _server: FXServer | None = PrivateAttr(default=None)
    _breaker: SharedBreaker | None = PrivateAttr(default=None)
    _attempt_count: int = PrivateAttr(default=0)
    _retry_count: int = PrivateAttr(default=0)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.breaker_state()  # opens the storage: a bad URL fails the run's start, not a call
        if self.base_url is None:
            self._server = FXServer().start()
            get_dagster_logger().info(f"Serving the bundled FX rates at {self._server.url}")

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def service_url(self) -> str:
        """`base_url`, or the bundled server's once set up."""
        if self.base_url is not None:
            return self.base_url.rstrip("/")
        if self._server is None:
            raise RuntimeError("FXRatesResource without base_url: call setup_for_execution first")
        return self._server.url

    @property
    def breaker(self) -> SharedBreaker:
        if self._breaker is None:
            self._breaker = SharedBreaker(
                self.breaker_fail_max,
                self.breaker_reset_timeout_seconds,
                self.breaker_storage_url,
                probe_timeout=self.timeout_seconds,
            )
        return self._breaker

    @property
    def attempt_count(self) -> int:
        """HTTP attempts this resource made so far."""
        return self._attempt_count

    @property
    def retry_count(self) -> int:
        """HTTP attempts after a transient failure this resource made so far."""
        return self._retry_count

    def pop_breaker_transitions(self) -> list[BreakerTransition]:
        """The breaker's state changes seen since the last pop, oldest first."""
        return self.breaker.pop_transitions()

    def breaker_state(self) -> dict[str, Any]:
        """Breaker state for metadata: state, fail_counter, fail_max, opened_at, reopens_at."""
        return self.breaker.snapshot()

    def get_usd_rates(self, date: dt.date, currencies: Sequence[str]) -> FxQuote:
        """USD per one unit of each currency, on the latest ECB business day on or before `date`.

        Raises `FXPermanentError` (bad request or answer), `FXTransientError` (attempts used up)
        or `FXCircuitOpenError` (failed fast, service not contacted).
        """
        wanted = list(dict.fromkeys(code.strip().upper() for code in currencies))
        if not all(re.fullmatch("[A-Z]{3}", code) for code in wanted):
            raise ValueError(f"expected ISO currency codes, got {currencies!r}")
        others = [code for code in wanted if code != USD]
        url = f"{self.service_url}/{date}?from={USD}" + (
            f"&to={','.join(others)}" if others else ""
        )
        body, attempts = self.breaker.call_service(url, self._get, self.max_attempts)
        rate_date, rates = parse_rates(body, url, attempts, date, others)
        return FxQuote(rate_date, {c: rates.get(c, Decimal(1)) for c in wanted}, attempts, url)

    def latest_rate_date(self) -> dt.date:
        """The last business day the service has rates for (`GET /latest`)."""
        url = f"{self.service_url}/latest?from={USD}"
        body, attempts = self.breaker.call_service(url, self._get, self.max_attempts)
        return parse_rates(body, url, attempts, None, [])[0]

    def _get(self, url: str, attempts: int) -> tuple[str, int]:
        """The body of a GET of up to `attempts` HTTP attempts, and how many it took. The breaker
        calls this; the body is checked afterwards, since any answer means the service is up."""
        result = http.send(
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
        self._attempt_count += result.attempts
        self._retry_count += result.attempts - 1
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
