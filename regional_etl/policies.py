"""Step retry policies: exponential backoff with jitter for steps that touch flaky dependencies.

Limits come from the environment, read when a policy is built (the module constants are built at
import, so set the variables before the code location loads):

| variable | default | meaning |
| --- | --- | --- |
| `REGIONAL_ETL_FX_STEP_RETRIES` | 3 | step retries of `fx_rates` after a transient FX failure |
| `REGIONAL_ETL_FX_STEP_RETRY_DELAY_SECONDS` | 5 | base delay `d` (seconds, may be fractional) |
| `REGIONAL_ETL_LANDING_STEP_RETRIES` | 2 | step retries of `raw_orders` |
| `REGIONAL_ETL_LANDING_STEP_RETRY_DELAY_SECONDS` | 2 | base delay `d` |

Dagster's exponential backoff waits `(2**n - 1) * d` before retry n, plus or minus up to `d` of
jitter: with the FX defaults 0-10 s, 10-20 s, then 30-40 s.

A step raising `Failure(allow_retries=False)` is never retried whatever the policy says: that is
how bad input, an open circuit breaker or a 4xx fail at once.
"""

from __future__ import annotations

import math
import os

from dagster import Backoff, Jitter, RetryPolicy

FX_RETRIES_ENV = "REGIONAL_ETL_FX_STEP_RETRIES"
FX_DELAY_ENV = "REGIONAL_ETL_FX_STEP_RETRY_DELAY_SECONDS"
LANDING_RETRIES_ENV = "REGIONAL_ETL_LANDING_STEP_RETRIES"
LANDING_DELAY_ENV = "REGIONAL_ETL_LANDING_STEP_RETRY_DELAY_SECONDS"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a whole number of retries") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r}: must be >= 0")
    return value


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={raw!r}: must be a finite number >= 0")
    return value


def backoff_policy(max_retries: int, delay_seconds: float) -> RetryPolicy:
    """`max_retries` step retries, exponential backoff from `delay_seconds`, +/- jitter."""
    return RetryPolicy(
        max_retries=max_retries,
        delay=delay_seconds,
        backoff=Backoff.EXPONENTIAL,
        jitter=Jitter.PLUS_MINUS,
    )


def fx_retry_policy(
    max_retries: int | None = None, delay_seconds: float | None = None
) -> RetryPolicy:
    """For steps calling the FX service; arguments override the environment (tests pass tiny
    delays).

    The FX client already retries single HTTP calls within seconds; a step retry covers what
    outlives those (a service restart, a rate-limit window), so its delay starts larger.
    """
    return backoff_policy(
        _env_int(FX_RETRIES_ENV, 3) if max_retries is None else max_retries,
        _env_seconds(FX_DELAY_ENV, 5.0) if delay_seconds is None else delay_seconds,
    )


def landing_retry_policy(
    max_retries: int | None = None, delay_seconds: float | None = None
) -> RetryPolicy:
    """For steps reading the landing zone, which fails transiently on network file systems and
    object stores. An incomplete drop is not transient: those steps raise
    `Failure(allow_retries=False)`."""
    return backoff_policy(
        _env_int(LANDING_RETRIES_ENV, 2) if max_retries is None else max_retries,
        _env_seconds(LANDING_DELAY_ENV, 2.0) if delay_seconds is None else delay_seconds,
    )


FX_RETRY_POLICY = fx_retry_policy()
LANDING_RETRY_POLICY = landing_retry_policy()

UPSTREAM_RETRIES_ENV = "REGIONAL_ETL_UPSTREAM_STEP_RETRIES"
UPSTREAM_DELAY_ENV = "REGIONAL_ETL_UPSTREAM_STEP_RETRY_DELAY_SECONDS"


def upstream_retry_policy(
    max_retries: int | None = None, delay_seconds: float | None = None
) -> RetryPolicy:
    """For `orders`, whose FX rates may still be on their way: the landing sensor launches the
    FX run of a new date next to its regional runs, so a missing rate is usually minutes away."""
    return backoff_policy(
        _env_int(UPSTREAM_RETRIES_ENV, 3) if max_retries is None else max_retries,
        _env_seconds(UPSTREAM_DELAY_ENV, 20.0) if delay_seconds is None else delay_seconds,
    )


UPSTREAM_RETRY_POLICY = upstream_retry_policy()
