"""Retry policies: exponential backoff with jitter for steps that touch flaky dependencies."""

from __future__ import annotations

import os

from dagster import Backoff, Jitter, RetryPolicy


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# The FX client already retries single HTTP calls; a step retry covers what outlives those
# (a service restart, a breaker probe later), so the step delay starts larger.
FX_RETRY_POLICY = RetryPolicy(
    max_retries=_env_int("REGIONAL_ETL_FX_STEP_RETRIES", 3),
    delay=_env_int("REGIONAL_ETL_FX_STEP_RETRY_DELAY_SECONDS", 5),
    backoff=Backoff.EXPONENTIAL,
    jitter=Jitter.PLUS_MINUS,
)
# Landing-zone reads fail transiently on network file systems and object stores.
LANDING_RETRY_POLICY = RetryPolicy(
    max_retries=_env_int("REGIONAL_ETL_LANDING_STEP_RETRIES", 2),
    delay=_env_int("REGIONAL_ETL_LANDING_STEP_RETRY_DELAY_SECONDS", 2),
    backoff=Backoff.EXPONENTIAL,
    jitter=Jitter.PLUS_MINUS,
)
