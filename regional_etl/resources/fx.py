"""The FX-rate resource: the bundled ECB history read in-process or, when a URL is set, a
Frankfurter-compatible service over HTTP with retries and a shared circuit breaker (both in
`regional_etl/fx/`), with the same numbers."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from regional_etl.fx.breaker import SharedBreaker
from regional_etl.fx.client import FrankfurterClient
from regional_etl.fx.rates import BundledSource, FxQuote


class FXRatesResource(ConfigurableResource):
    """Daily FX rates (USD per unit of a currency). With `base_url`: a Frankfurter-compatible HTTP
    service, with retries and a circuit breaker that every run process shares. Without: the
    bundled ECB history, read in-process (no HTTP, no breaker), with the same numbers."""

    base_url: str | None = Field(
        default=None,
        description="Frankfurter-compatible FX API, e.g. https://api.frankfurter.app. Unset: the "
        "bundled ECB history, read in-process (no HTTP; the fields below then do not apply).",
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

    _source: BundledSource | FrankfurterClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # With a URL this opens the breaker's storage: a bad one fails the run's start, not a call.
        _ = self.source

    @property
    def source(self) -> BundledSource | FrankfurterClient:
        """The HTTP client with `base_url`, else the bundled history."""
        if self._source is not None:
            return self._source
        if self.base_url is None:
            self._source = BundledSource()
        else:
            breaker = SharedBreaker(
                self.breaker_fail_max,
                self.breaker_reset_timeout_seconds,
                self.breaker_storage_url,
                probe_timeout=self.timeout_seconds,
            )
            self._source = FrankfurterClient(
                self.base_url.rstrip("/"),
                breaker,
                self.timeout_seconds,
                self.max_attempts,
                self.backoff_base_seconds,
                self.backoff_max_seconds,
            )
        return self._source

    @property
    def client(self) -> FrankfurterClient | None:
        """The HTTP client; None without `base_url`: no HTTP attempts, no breaker to report."""
        return self.source if isinstance(self.source, FrankfurterClient) else None

    def get_usd_rates(self, date: dt.date, currencies: Sequence[str]) -> FxQuote:
        """USD per one unit of each currency, on the latest ECB business day on or before `date`.

        Raises `FXPermanentError` (bad request or answer, a date before the history),
        `FXTransientError` (attempts used up) or `FXCircuitOpenError` (failed fast, service not
        contacted); the bundled history raises only the first.
        """
        wanted = list(dict.fromkeys(code.strip().upper() for code in currencies))
        if not all(re.fullmatch("[A-Z]{3}", code) for code in wanted):
            raise ValueError(f"expected ISO currency codes, got {currencies!r}")
        return self.source.get_usd_rates(date, wanted)

    def latest_rate_date(self) -> dt.date:
        """The last business day the source has rates for (over HTTP: `GET /latest`)."""
        return self.source.latest_rate_date()
