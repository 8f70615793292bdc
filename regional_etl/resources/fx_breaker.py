"""The FX circuit breaker: pybreaker's state machine on shared storage, one probe at a time.

- Closed: calls go through with their full retry budget; a call whose attempts are all used up
  (`FXTransientError`) counts as one failure. Other errors never count: pybreaker treats an
  excluded error as "the service answered", which resets the failure count.
- Open (after `fail_max` failed calls in a row, in any process sharing the storage): calls fail
  fast with `FXCircuitOpenError`, which says when the breaker will let a probe through.
- After `reset_timeout` seconds, one call becomes the half-open probe, made with a single HTTP
  attempt. Success closes the breaker, failure reopens it for another timeout. With the SQLite
  storage the probe is granted to one caller across processes (a lease in the same file); a
  caller that loses the race fails fast like an open breaker.

Every state change is recorded (`BreakerTransition`) and logged, so the asset can report it.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pybreaker
from dagster import get_dagster_logger

from regional_etl.resources.breaker_storage import ProbeLease
from regional_etl.resources.fx_errors import FXCircuitOpenError, FXTransientError

T = TypeVar("T")
# A probe makes one HTTP attempt; the lease outlives it by a margin so that a slow answer does not
# let a second probe in, and expires on its own if the prober dies.
PROBE_LEASE_MARGIN_SECONDS = 30.0


@dataclass(frozen=True)
class BreakerTransition:
    """One circuit-breaker state change seen by this process."""

    breaker: str
    old_state: str | None
    new_state: str
    at: dt.datetime

    def describe(self) -> str:
        """`closed -> open at 2024-03-15T10:00:00+00:00`, as the UI shows it."""
        return f"{self.old_state or 'unknown'} -> {self.new_state} at {self.at.isoformat()}"

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
            f"FX circuit breaker '{transition.breaker}': {transition.describe()}"
        )


class SharedBreaker:
    """A pybreaker `CircuitBreaker` on shared storage, with the half-open probe rule above."""

    def __init__(
        self,
        name: str,
        fail_max: int,
        reset_timeout_seconds: float,
        storage: pybreaker.CircuitBreakerStorage,
        probe_timeout_seconds: float,
    ) -> None:
        self.name = name
        self._storage = storage
        self._probe_ttl = probe_timeout_seconds + PROBE_LEASE_MARGIN_SECONDS
        self._transitions: list[BreakerTransition] = []
        self._lock = threading.Lock()
        self._cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout_seconds,
            # Only exhausted transient calls are system errors; a 4xx, a bad payload or an
            # interrupted run says nothing about the service's health.
            exclude=[lambda exc: not isinstance(exc, FXTransientError)],
            listeners=[_TransitionRecorder(self._transitions, self._lock)],
            state_storage=storage,
            name=name,
            # Let the call that trips the breaker raise its own FXTransientError (it did make
            # its attempts); only calls refused by an open breaker raise FXCircuitOpenError.
            throw_new_error_on_trip=False,
        )

    # --- calls ----------------------------------------------------------------------------
    def call(self, url: str, fetch: Callable[[int], T], max_attempts: int) -> T:
        """`fetch(attempts_allowed)` under the breaker: `max_attempts` when closed, 1 as a probe."""
        state = self._cb.current_state
        if state == pybreaker.STATE_CLOSED:
            return self._call(url, fetch, max_attempts)
        if state == pybreaker.STATE_OPEN and not self._reset_timeout_passed():
            raise self._open_error(url)
        # Open past its timeout, or half-open: this call is the probe, if nobody else's is.
        lease = self._storage if isinstance(self._storage, ProbeLease) else None
        token = lease.claim_probe(self._probe_ttl) if lease is not None else ""
        if token is None:
            raise self._probing_error(url)
        try:
            return self._call(url, fetch, 1)
        finally:
            if lease is not None and token:
                lease.release_probe(token)

    def _call(self, url: str, fetch: Callable[[int], T], attempts: int) -> T:
        try:
            return self._cb.call(fetch, attempts)
        except pybreaker.CircuitBreakerError as exc:
            # Another process opened it between our look at the state and the call.
            raise self._open_error(url) from exc

    # --- state ----------------------------------------------------------------------------
    @property
    def fail_max(self) -> int:
        return self._cb.fail_max

    @property
    def reset_timeout(self) -> float:
        return self._cb.reset_timeout

    def _opened_at(self) -> dt.datetime | None:
        return self._storage.opened_at

    def _reopens_at(self) -> dt.datetime | None:
        opened_at = self._opened_at()
        return opened_at + dt.timedelta(seconds=self.reset_timeout) if opened_at else None

    def _reset_timeout_passed(self) -> bool:
        reopens_at = self._reopens_at()
        return reopens_at is None or dt.datetime.now(dt.UTC) >= reopens_at

    def snapshot(self) -> dict[str, Any]:
        """State for metadata: state, fail_counter, fail_max, opened_at, reopens_at."""
        state = self._cb.current_state
        opened_at = self._opened_at()
        reopens_at = self._reopens_at() if state == pybreaker.STATE_OPEN else None
        return {
            "name": self.name,
            "state": state,
            "fail_counter": self._cb.fail_counter,
            "fail_max": self.fail_max,
            "opened_at": opened_at.isoformat() if opened_at else None,
            "reopens_at": reopens_at.isoformat() if reopens_at else None,
        }

    def transitions(self) -> list[BreakerTransition]:
        with self._lock:
            return list(self._transitions)

    def pop_transitions(self) -> list[BreakerTransition]:
        with self._lock:
            taken = list(self._transitions)
            self._transitions.clear()
        return taken

    # --- errors ---------------------------------------------------------------------------
    def _open_error(self, url: str) -> FXCircuitOpenError:
        opened_at, reopens_at = self._opened_at(), self._reopens_at()
        when = reopens_at.isoformat() if reopens_at else "after the reset timeout"
        return FXCircuitOpenError(
            f"FX circuit breaker '{self.name}' is open (it opens after {self.fail_max} failed "
            f"calls in a row, or a failed probe; opened at "
            f"{opened_at.isoformat() if opened_at else 'unknown'}): not calling {url}; "
            f"it will try again at {when}",
            url=url,
            opened_at=opened_at,
            reopens_at=reopens_at,
        )

    def _probing_error(self, url: str) -> FXCircuitOpenError:
        probe_until = self._storage.probe_until if isinstance(self._storage, ProbeLease) else None
        when = probe_until.isoformat() if probe_until else "as soon as that probe ends"
        return FXCircuitOpenError(
            f"FX circuit breaker '{self.name}' is half-open and another caller is sending the one "
            f"probe call: not calling {url}; it will try again when that probe has closed the "
            f"breaker, at the latest at {when}",
            url=url,
            opened_at=self._opened_at(),
            reopens_at=probe_until,
        )
