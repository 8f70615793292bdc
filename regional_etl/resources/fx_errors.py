"""What can go wrong when asking the FX service, split by what a caller should do about it.

- `FXTransientError`: every HTTP attempt of a call failed in a way that may pass (timeout,
  connection error, 5xx, 429). Worth retrying later: the step's `RetryPolicy` does.
- `FXPermanentError`: the service answered, but not usefully (4xx other than 429, a body that is
  not a Frankfurter answer). Asking again gets the same answer: fail now.
- `FXCircuitOpenError`: the circuit breaker refused the call without contacting the service.
  It says when the breaker will let a probe through again.
"""

from __future__ import annotations

import datetime as dt


class FXError(Exception):
    """Base class for FX client failures. `attempts` is how many HTTP requests the call made."""

    retryable: bool = False

    def __init__(self, message: str, *, url: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts

    @property
    def retries(self) -> int:
        return max(self.attempts - 1, 0)


class FXTransientError(FXError):
    """Every attempt of a call failed in a way that may pass (timeout, connection, 5xx, 429)."""

    retryable = True


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
