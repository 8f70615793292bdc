"""Circuit-breaker state in a SQLite file, so every run process on the instance shares one breaker.

pybreaker keeps the state machine; this module only persists what its `CircuitBreakerStorage`
interface asks for (state, failure and success counters, opened_at). Every read and write goes
to the file, because pybreaker re-reads the state on each call and that is how a breaker opened
by one run process is seen by the next.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pybreaker

SQLITE_URL_PREFIX = "sqlite:///"
BUSY_TIMEOUT_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS circuit_breakers (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    fail_counter INTEGER NOT NULL DEFAULT 0,
    success_counter INTEGER NOT NULL DEFAULT 0,
    opened_at REAL
)
"""


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

    def _write(self, sql: str, *params: object) -> None:
        with self._connect() as conn:
            # The row may be gone if someone deleted it by hand: recreate it closed.
            conn.execute(
                "INSERT OR IGNORE INTO circuit_breakers (name, state) VALUES (?, ?)",
                (self.name, pybreaker.STATE_CLOSED),
            )
            conn.execute(sql, (*params, self.name))

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
