"""The settings that make failures heal: run retries in dagster.yaml, step retry limits from the
environment, and the breaker's cross-process probe lease in its SQLite file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dagster import Backoff, Jitter, instance_for_test
from dagster._core.instance.config import dagster_instance_config

from regional_etl import settings
from regional_etl.fx.breaker import SQLiteCircuitBreakerStorage
from regional_etl.policies import fx_retry_policy

PROJECT = Path(__file__).resolve().parents[2]
FX_RETRIES_ENV = settings.FX_STEP_RETRIES.name
FX_DELAY_ENV = settings.FX_STEP_RETRY_DELAY.name


def test_dagster_yaml_retries_crashed_runs_only():
    config, _ = dagster_instance_config(str(PROJECT))  # validates against Dagster's schema
    assert config["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": False,
    }
    # Storage is Dagster's default under $DAGSTER_HOME (test_instance.py proves the isolation).
    assert not {"storage", "local_artifact_storage", "compute_logs"} & set(config)
    with instance_for_test(overrides={"run_retries": config["run_retries"]}) as instance:
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure


def test_step_retry_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(FX_RETRIES_ENV, "5")
    monkeypatch.setenv(FX_DELAY_ENV, "0.25")
    policy = fx_retry_policy()
    assert (policy.max_retries, policy.delay) == (5, 0.25)
    assert (policy.backoff, policy.jitter) == (Backoff.EXPONENTIAL, Jitter.PLUS_MINUS)
    assert fx_retry_policy(max_retries=0, delay_seconds=0).max_retries == 0

    monkeypatch.setenv(FX_RETRIES_ENV, "three")
    with pytest.raises(ValueError, match=f"{FX_RETRIES_ENV}='three'"):
        fx_retry_policy()
    monkeypatch.setenv(FX_RETRIES_ENV, "1")
    monkeypatch.setenv(FX_DELAY_ENV, "-1")
    with pytest.raises(ValueError, match=">= 0"):
        fx_retry_policy()


def test_one_probe_lease_at_a_time_and_it_expires(tmp_path: Path):
    path = tmp_path / "breaker.sqlite"
    first = SQLiteCircuitBreakerStorage(path, "fx-rates")
    second = SQLiteCircuitBreakerStorage(path, "fx-rates")
    other = SQLiteCircuitBreakerStorage(path, "other")

    token = first.claim_probe(60)
    assert token is not None and second.probe_until is not None
    assert second.claim_probe(60) is None
    assert other.claim_probe(60) is not None  # leases are per breaker
    second.release_probe("not-the-holder")  # only the holder can release
    assert second.claim_probe(60) is None
    first.release_probe(token)
    assert second.probe_until is None

    short = second.claim_probe(0.2)
    assert short is not None and first.claim_probe(60) is None
    time.sleep(0.3)  # the holder "died": its lease runs out
    assert first.claim_probe(60) is not None
    first.release_probe(short)  # a stale token releases nothing
    assert second.claim_probe(60) is None
