"""Step retry policies: exponential backoff with jitter for steps that touch flaky dependencies.

Limits come from `regional_etl.settings` (`REGIONAL_ETL_{FX,LANDING,UPSTREAM}_STEP_RETRIES` and
`..._STEP_RETRY_DELAY_SECONDS`), read when a policy is built; the assets build theirs when the
code location loads. Dagster waits `(2**n - 1) * d` before retry n, plus or minus up to `d` of
jitter: with the FX defaults 0-10 s, 10-20 s, then 30-40 s.

A step raising `Failure(allow_retries=False)` is never retried whatever the policy says: that is
how bad input, an open circuit breaker or a 4xx fail at once.
"""

from __future__ import annotations

import math

from dagster import Backoff, Jitter, RetryPolicy

from regional_etl import settings
from regional_etl.settings import Setting


def _number(setting: Setting, kind: type[int] | type[float]) -> int | float:
    raw = setting.get() or ""
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{setting.name}={raw!r}: expected a number ({kind.__name__})") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{setting.name}={raw!r}: must be a finite number >= 0")
    return value


def _policy(
    retries: Setting, delay: Setting, max_retries: int | None, delay_seconds: float | None
) -> RetryPolicy:
    """Arguments override the settings (tests pass tiny delays)."""
    return RetryPolicy(
        max_retries=int(_number(retries, int)) if max_retries is None else max_retries,
        delay=_number(delay, float) if delay_seconds is None else delay_seconds,
        backoff=Backoff.EXPONENTIAL,
        jitter=Jitter.PLUS_MINUS,
    )


def fx_retry_policy(
    max_retries: int | None = None, delay_seconds: float | None = None
) -> RetryPolicy:
    """For steps calling the FX service. Its client already retries single HTTP calls within
    seconds; a step retry covers what outlives those (a restart, a rate-limit window), so its
    delay starts larger."""
    return _policy(
        settings.FX_STEP_RETRIES, settings.FX_STEP_RETRY_DELAY, max_retries, delay_seconds
    )


def landing_retry_policy(
    max_retries: int | None = None, delay_seconds: float | None = None
) -> RetryPolicy:
    """For steps reading the landing zone, which fails transiently on network file systems and
    object stores. An incomplete drop is not transient: those steps raise
    `Failure(allow_retries=False)`."""
    return _policy(
        settings.LANDING_STEP_RETRIES, settings.LANDING_STEP_RETRY_DELAY, max_retries, delay_seconds
    )


def upstream_retry_policy(
    max_retries: int | None = None, delay_seconds: float | None = None
) -> RetryPolicy:
    """For `orders`, whose FX rates may still be on their way: the landing sensor launches the
    FX run of a new date next to its regional runs, so a missing rate is usually minutes away."""
    return _policy(
        settings.UPSTREAM_STEP_RETRIES,
        settings.UPSTREAM_STEP_RETRY_DELAY,
        max_retries,
        delay_seconds,
    )


def spark_retry_policy() -> RetryPolicy:
    """For steps whose only flaky dependency is Spark: a local Connect server that died is
    started again by the retry's first session, a cluster's comes back on its own."""
    return RetryPolicy(
        max_retries=2, delay=5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
    )


# The assets' policies, built when the code location loads (Dagster needs them on the definition).
FX_RETRY_POLICY = fx_retry_policy()
LANDING_RETRY_POLICY = landing_retry_policy()
UPSTREAM_RETRY_POLICY = upstream_retry_policy()
SPARK_RETRY_POLICY = spark_retry_policy()
