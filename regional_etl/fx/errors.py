"""What can go wrong when asking for FX rates, split by what a caller should do about it."""

from __future__ import annotations

import datetime as dt


class FXError(Exception):
    """An FX call failed after `attempts` HTTP requests (0: the bundled history, no HTTP)."""

    def __init__(self, message: str, attempts: int = 0, status: int | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status  # of the last answer, if there was one


class FXTransientError(FXError):
    """Every attempt failed in a way that may pass (timeout, connection, 5xx, 429): retry later."""


class FXPermanentError(FXError):
    """The source answered, but not usefully (4xx other than 429, an unusable body, a date or
    currency the history lacks): asking again gets the same answer."""


class FXCircuitOpenError(FXError):
    """The circuit breaker refused the call without contacting the service; `reopens_at` is when
    it lets a probe through again."""

    def __init__(self, message: str, reopens_at: dt.datetime | None) -> None:
        super().__init__(message)
        self.reopens_at = reopens_at
