"""Circuit-breaker state in shared storage, so every run process on the instance sees one breaker.

pybreaker keeps the state machine; this module only persists what its `CircuitBreakerStorage`
interface asks for (state, failure and success counters, opened_at). Every read and write goes
to the storage, because pybreaker re-reads the state on each call and that is how a breaker opened
by one run process is seen by the next.

Storages, chosen by URL (`build_breaker_storage`):
- `sqlite:///<path>` (default: `$DAGSTER_HOME/fx_circuit_breaker.sqlite`): one file shared by the
  processes of one machine. It also holds the half-open *probe lease* (`claim_probe`), which
  pybreaker does not have: pybreaker serializes calls inside one process only, so without the
  lease every process that sees the reset timeout pass would send its own probe.
- `redis://host:port/db`: pybreaker's own `CircuitRedisStorage`, for run workers on several
  machines (needs the `redis` extra). No probe lease: at most one probe per process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import pybreaker

SQLITE_URL_PREFIX = "sqlite:///"
REDIS_URL_PREFIXES = ("redis://", "rediss://", "unix://")
BREAKER_DB_FILENAME = "fx_circuit_breaker.sqlite"
BUSY_TIMEOUT_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS circuit_breakers (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    fail_counter INTEGER NOT NULL DEFAULT 0,
    success_counter INTEGER NOT NULL DEFAULT 0,
    opened_at REAL,
    probe_owner TEXT,
    probe_until REAL
)
"""
# Files written before the probe lease existed get its columns on first use.
_ADDED_COLUMNS = {"probe_owner": "TEXT", "probe_until": "REAL"}


@runtime_checkable
class ProbeLease(Protocol):
    """A storage that can grant the half-open probe to one caller across processes."""

    def claim_probe(self, ttl_seconds: float) -> str | None: ...

    def release_probe(self, token: str) -> None: ...

    @property
    def probe_until(self) -> dt.datetime | None: ...


def default_breaker_storage_url() -> str:
    """`sqlite:///$DAGSTER_HOME/fx_circuit_breaker.sqlite`, else a file in the temp dir.

    The temp-dir fallback is shared by everything on the machine that leaves both unset, so
    tests always pass an explicit storage URL.
    """
    home = os.environ.get("DAGSTER_HOME")
    folder = Path(home) if home else Path(tempfile.gettempdir())
    name = BREAKER_DB_FILENAME if home else f"regional_etl_{BREAKER_DB_FILENAME}"
    return f"sqlite:///{folder / name}"


def build_breaker_storage(url: str | None, name: str) -> pybreaker.CircuitBreakerStorage:
    """The storage for breaker `name` at `url` (None: the default SQLite file)."""
    url = url or default_breaker_storage_url()
    if url.startswith(REDIS_URL_PREFIXES):
        try:
            # Optional extra: imported here so that SQLite users never need it installed.
            redis = importlib.import_module("redis")
        except ImportError as exc:
            raise ImportError(
                f"breaker_storage_url {url!r} needs the redis client: "
                "pip install 'regional_etl[redis]'"
            ) from exc
        client = redis.Redis.from_url(url)
        return pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=name)
    return SQLiteCircuitBreakerStorage(sqlite_path_from_url(url), name)


def sqlite_path_from_url(url: str) -> Path:
    """`sqlite:///relative.db` or `sqlite:////absolute/path.db` (SQLAlchemy's convention)."""
    if not url.startswith(SQLITE_URL_PREFIX) or len(url) == len(SQLITE_URL_PREFIX):
        raise ValueError(f"expected sqlite:///<path>, got {url!r}")
    path = url[len(SQLITE_URL_PREFIX) :]
    if path == ":memory:":
        # An in-memory database cannot be shared between processes, which is the whole point.
        raise ValueError("an in-memory SQLite breaker store would not be shared; use a file")
    return Path(path)


class SQLiteCircuitBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker storage backed by one row per breaker name in a SQLite file.

    Safe across threads and processes: each operation opens its own short connection (so it also
    survives fork), the database runs in WAL mode with a busy timeout, and counters change with
    single atomic UPDATE statements rather than read-modify-write.
    """

    def __init__(
        self,
        path: str | Path,
        name: str,
        initial_state: str = pybreaker.STATE_CLOSED,
        busy_timeout_seconds: float = BUSY_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(name)
        self._path = Path(path)
        self._busy_timeout = busy_timeout_seconds
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            # WAL is a property of the file: readers never block the one writer.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            present = {row[1] for row in conn.execute("PRAGMA table_info(circuit_breakers)")}
            for column, kind in _ADDED_COLUMNS.items():
                if column not in present:
                    with contextlib.suppress(sqlite3.OperationalError):  # added by a racing peer
                        conn.execute(f"ALTER TABLE circuit_breakers ADD COLUMN {column} {kind}")
            conn.execute(
                "INSERT OR IGNORE INTO circuit_breakers (name, state) VALUES (?, ?)",
                (name, initial_state),
            )

    @property
    def path(self) -> Path:
        return self._path

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # Autocommit: each statement is its own transaction, which is all we need.
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            # With WAL this is still crash-safe; losing the very last counter update on power loss
            # is harmless for a breaker, and it makes each write several times cheaper.
            conn.execute("PRAGMA synchronous=NORMAL")
            yield conn
        finally:
            conn.close()

    def _read(self, column: str) -> object:
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {column} FROM circuit_breakers WHERE name = ?", (self.name,)
            ).fetchone()
        return None if row is None else row[0]

    def _write(self, sql: str, *params: object) -> int:
        with self._connect() as conn:
            # The row may be gone if someone deleted it by hand: recreate it closed.
            conn.execute(
                "INSERT OR IGNORE INTO circuit_breakers (name, state) VALUES (?, ?)",
                (self.name, pybreaker.STATE_CLOSED),
            )
            return conn.execute(sql, (*params, self.name)).rowcount

    @property
    def state(self) -> str:
        value = self._read("state")
        return pybreaker.STATE_CLOSED if value is None else str(value)

    @state.setter
    def state(self, state: str) -> None:
        self._write("UPDATE circuit_breakers SET state = ? WHERE name = ?", str(state))

    def increment_counter(self) -> None:
        self._write("UPDATE circuit_breakers SET fail_counter = fail_counter + 1 WHERE name = ?")

    def reset_counter(self) -> None:
        self._write("UPDATE circuit_breakers SET fail_counter = 0 WHERE name = ?")

    def increment_success_counter(self) -> None:
        self._write(
            "UPDATE circuit_breakers SET success_counter = success_counter + 1 WHERE name = ?"
        )

    def reset_success_counter(self) -> None:
        self._write("UPDATE circuit_breakers SET success_counter = 0 WHERE name = ?")

    @property
    def counter(self) -> int:
        value = self._read("fail_counter")
        return int(value) if isinstance(value, int) else 0

    @property
    def success_counter(self) -> int:
        value = self._read("success_counter")
        return int(value) if isinstance(value, int) else 0

    @property
    def opened_at(self) -> dt.datetime | None:
        value = self._read("opened_at")
        if not isinstance(value, int | float):
            return None
        return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)

    @opened_at.setter
    def opened_at(self, datetime: dt.datetime) -> None:
        # Keep the latest opening if two processes trip the breaker at once (as pybreaker's Redis
        # storage does); naive datetimes are taken as UTC, which is what pybreaker passes.
        if datetime.tzinfo is None:
            datetime = datetime.replace(tzinfo=dt.UTC)
        self._write(
            "UPDATE circuit_breakers SET opened_at = MAX(COALESCE(opened_at, 0), ?) WHERE name = ?",
            datetime.timestamp(),
        )

    # --- the half-open probe lease (not part of pybreaker's interface) ----------------------
    def claim_probe(self, ttl_seconds: float) -> str | None:
        """Take the probe lease for `ttl_seconds`: a token, or None if another caller holds it.

        One atomic UPDATE, so two processes can never both win. A lease whose holder died
        expires on its own, so a crashed probe cannot keep the breaker half-open forever.
        """
        token = uuid.uuid4().hex
        now = time.time()
        claimed = self._write(
            "UPDATE circuit_breakers SET probe_owner = ?, probe_until = ? "
            "WHERE (probe_until IS NULL OR probe_until <= ?) AND name = ?",
            token,
            now + ttl_seconds,
            now,
        )
        return token if claimed == 1 else None

    def release_probe(self, token: str) -> None:
        """Give the lease back if `token` still holds it (an expired lease may be another's)."""
        self._write(
            "UPDATE circuit_breakers SET probe_owner = NULL, probe_until = NULL "
            "WHERE probe_owner = ? AND name = ?",
            token,
        )

    @property
    def probe_until(self) -> dt.datetime | None:
        """When the current probe lease expires, if one is held."""
        value = self._read("probe_until")
        if not isinstance(value, int | float) or value <= time.time():
            return None
        return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
