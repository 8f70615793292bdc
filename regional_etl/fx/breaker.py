"""The FX circuit breaker: pybreaker's state machine on storage that every run process shares.

Closed: a call whose attempts are all used up (`FXTransientError`) is one failure; any other
outcome means the service answered. Open, after `fail_max` failures in a row in any process:
calls fail fast. After `reset_timeout` one call is the half-open probe, with one HTTP attempt.
`SQLiteCircuitBreakerStorage` also holds the probe lease that pybreaker lacks (it serializes
calls within one process only), so that one process probes while the others fail fast.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pybreaker
from dagster import get_dagster_logger

from regional_etl import settings
from regional_etl.fx.errors import FXCircuitOpenError, FXTransientError

T = TypeVar("T")
BREAKER_NAME = "fx-rates"  # one breaker for every process that shares the storage
# The lease outlives the probe's one HTTP attempt by this margin, so that a slow answer does not
# let a second probe in.
PROBE_LEASE_MARGIN_SECONDS = 30.0


@dataclass(frozen=True)
class BreakerTransition:
    """One state change, seen by this process when it happened or first noticed it."""

    breaker: str
    old_state: str | None
    new_state: str
    at: dt.datetime

    def describe(self) -> str:
        """`closed -> open at 2024-03-15T10:00:00+00:00`, as the UI shows it."""
        return f"{self.old_state or 'unknown'} -> {self.new_state} at {self.at.isoformat()}"


class SharedBreaker(pybreaker.CircuitBreaker, pybreaker.CircuitBreakerListener):
    """A pybreaker `CircuitBreaker` on shared storage, listening to itself to record and log
    its transitions."""

    def __init__(
        self, fail_max: int, reset_timeout: float, storage_url: str | None, probe_timeout: float
    ) -> None:
        self._probe_ttl = probe_timeout + PROBE_LEASE_MARGIN_SECONDS
        self._transitions: list[BreakerTransition] = []
        super().__init__(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            # A 4xx, a bad answer or an interrupted run says nothing about the service's health.
            exclude=[lambda exc: not isinstance(exc, FXTransientError)],
            listeners=[self],
            state_storage=build_breaker_storage(storage_url, BREAKER_NAME),
            name=BREAKER_NAME,
            # The call that trips the breaker made its attempts: it raises its own error.
            throw_new_error_on_trip=False,
        )

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = old_state.name if old_state else None
        change = BreakerTransition(self.name or "", old, new_state.name, dt.datetime.now(dt.UTC))
        self._transitions.append(change)  # pybreaker holds its lock while it tells listeners
        get_dagster_logger().warning(f"FX circuit breaker '{self.name}': {change.describe()}")

    def pop_transitions(self) -> list[BreakerTransition]:
        """The state changes seen since the last pop, oldest first."""
        with self._lock:
            seen, self._transitions = self._transitions, []
        return seen

    def call_service(self, url: str, fetch: Callable[[str, int], T], max_attempts: int) -> T:
        """`fetch(url, attempts)` under the breaker: `max_attempts` when closed, 1 as a probe."""
        state, reopens_at = self.current_state, self.reopens_at()
        if state == pybreaker.STATE_OPEN and reopens_at and dt.datetime.now(dt.UTC) < reopens_at:
            raise self._open_error(url)
        probe = state != pybreaker.STATE_CLOSED
        storage = self._state_storage
        lease = storage if probe and isinstance(storage, SQLiteCircuitBreakerStorage) else None
        token = lease.claim_probe(self._probe_ttl) if lease else None
        if lease and token is None:
            until = lease.probe_until
            raise FXCircuitOpenError(
                f"FX circuit breaker '{self.name}' is half-open and another caller is sending "
                f"the one probe call: not calling {url}; it will try again when that probe has "
                f"closed the breaker, at the latest at {until and until.isoformat()}",
                until,
            )
        try:
            return self.call(fetch, url, 1 if probe else max_attempts)
        except pybreaker.CircuitBreakerError as exc:  # another process opened it meanwhile
            raise self._open_error(url) from exc
        finally:
            if lease and token:
                lease.release_probe(token)

    def reopens_at(self) -> dt.datetime | None:
        opened_at = self._state_storage.opened_at
        return opened_at and opened_at + dt.timedelta(seconds=self.reset_timeout)

    def _open_error(self, url: str) -> FXCircuitOpenError:
        opened_at, reopens_at = self._state_storage.opened_at, self.reopens_at()
        return FXCircuitOpenError(
            f"FX circuit breaker '{self.name}' is open (it opens after {self.fail_max} failed "
            f"calls in a row, or a failed probe; opened at {opened_at and opened_at.isoformat()})"
            f": not calling {url}; it will try again at {reopens_at and reopens_at.isoformat()}",
            reopens_at,
        )

    def snapshot(self) -> dict[str, Any]:
        """State for metadata: state, fail_counter, fail_max, opened_at, reopens_at."""
        state, opened_at = self.current_state, self._state_storage.opened_at
        reopens_at = self.reopens_at() if state == pybreaker.STATE_OPEN else None
        return {
            "name": self.name,
            "state": state,
            "fail_counter": self.fail_counter,
            "fail_max": self.fail_max,
            "opened_at": opened_at and opened_at.isoformat(),
            "reopens_at": reopens_at and reopens_at.isoformat(),
        }


BREAKER_DB_FILENAME = "fx_circuit_breaker.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS circuit_breakers (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL DEFAULT 'closed',
    fail_counter INTEGER NOT NULL DEFAULT 0,
    success_counter INTEGER NOT NULL DEFAULT 0,
    opened_at REAL,
    probe_owner TEXT,
    probe_until REAL
)
"""


def build_breaker_storage(url: str | None, name: str) -> pybreaker.CircuitBreakerStorage:
    """The storage of breaker `name` at `url`: `sqlite:///<path>` (SQLAlchemy's convention; None:
    `$DAGSTER_HOME/fx_circuit_breaker.sqlite`, else in the temp dir) or `redis://host:port/db`
    (needs the `redis` extra)."""
    home = settings.DAGSTER_HOME.get() or tempfile.gettempdir()
    url = url or f"sqlite:///{Path(home, BREAKER_DB_FILENAME)}"
    if not url.startswith(("redis://", "rediss://", "unix://")):
        path = url.removeprefix("sqlite:///")
        if path == url or path in ("", ":memory:"):
            raise ValueError(f"expected sqlite:///<a file every run process reaches>: {url!r}")
        return SQLiteCircuitBreakerStorage(path, name)
    try:
        redis = importlib.import_module("redis")  # optional: SQLite users never need it
    except ImportError as exc:
        raise ImportError(
            f"breaker_storage_url {url!r} needs the redis client: pip install 'regional_etl[redis]'"
        ) from exc
    return pybreaker.CircuitRedisStorage("closed", redis.Redis.from_url(url), namespace=name)


class SQLiteCircuitBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker storage: one row per breaker name in a SQLite file.

    Safe across threads and processes: each operation has a connection of its own (which also
    survives fork), in WAL mode with a busy timeout, and every change is one atomic UPDATE.
    """

    def __init__(self, path: str | Path, name: str) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # a property of the file: readers never wait
            conn.execute(_SCHEMA)

    def _connect(self) -> contextlib.closing[sqlite3.Connection]:
        # Autocommit: each statement is its own transaction, which is all a breaker needs.
        return contextlib.closing(sqlite3.connect(self.path, timeout=10.0, isolation_level=None))

    def _read(self, column: str) -> Any:
        with self._connect() as conn:
            sql = f"SELECT {column} FROM circuit_breakers WHERE name = ?"
            row = conn.execute(sql, (self.name,)).fetchone()
        return row and row[0]

    def _update(self, assignments: str, *params: object, where: str = "1") -> int:
        """`UPDATE ... SET <assignments> WHERE <where> AND name = <this breaker>`: rows changed.
        The row is created on the first write; one deleted by hand comes back closed."""
        with self._connect() as conn:
            conn.execute("INSERT OR IGNORE INTO circuit_breakers (name) VALUES (?)", (self.name,))
            sql = f"UPDATE circuit_breakers SET {assignments} WHERE ({where}) AND name = ?"
            return conn.execute(sql, (*params, self.name)).rowcount

    @property
    def state(self) -> str:
        return self._read("state") or pybreaker.STATE_CLOSED

    @state.setter
    def state(self, state: str) -> None:
        self._update("state = ?", str(state))

    def increment_counter(self) -> None:
        self._update("fail_counter = fail_counter + 1")

    def reset_counter(self) -> None:
        self._update("fail_counter = 0")

    def increment_success_counter(self) -> None:
        self._update("success_counter = success_counter + 1")

    def reset_success_counter(self) -> None:
        self._update("success_counter = 0")

    @property
    def counter(self) -> int:
        return self._read("fail_counter") or 0

    @property
    def success_counter(self) -> int:
        return self._read("success_counter") or 0

    @property
    def opened_at(self) -> dt.datetime | None:
        return _utc(self._read("opened_at"))

    @opened_at.setter
    def opened_at(self, datetime: dt.datetime) -> None:
        # Two processes tripping at once keep the later opening, as pybreaker's Redis storage does.
        self._update("opened_at = MAX(COALESCE(opened_at, 0), ?)", datetime.timestamp())

    def claim_probe(self, ttl_seconds: float) -> str | None:
        """Take the half-open probe lease for `ttl_seconds`: a token, or None if another caller
        holds it. One atomic UPDATE, so two processes never both win; a lease whose holder died
        runs out, so a crashed probe cannot keep the breaker half-open."""
        token, now = uuid.uuid4().hex, time.time()
        where = "probe_until IS NULL OR probe_until <= ?"
        claimed = self._update(
            "probe_owner = ?, probe_until = ?", token, now + ttl_seconds, now, where=where
        )
        return token if claimed == 1 else None

    def release_probe(self, token: str) -> None:
        """Give the lease back if `token` still holds it (an expired lease may be another's)."""
        self._update("probe_owner = NULL, probe_until = NULL", token, where="probe_owner = ?")

    @property
    def probe_until(self) -> dt.datetime | None:
        """When the current probe lease runs out, if one is held."""
        until = self._read("probe_until")
        return _utc(until) if until and until > time.time() else None


def _utc(timestamp: float | None) -> dt.datetime | None:
    return None if timestamp is None else dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
