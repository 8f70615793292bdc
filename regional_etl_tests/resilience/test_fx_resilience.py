"""`fx_rates` runs against a real FX server with injected faults, on real Dagster instances, with
the real SQLite breaker shared with a separate run process."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, materialize
from dagster._serdes import serialize_value

from regional_etl.assets.reference import build_fx_rates_asset, fx_rates
from regional_etl.contract import CURRENCIES, Table
from regional_etl.fx.breaker import SQLiteCircuitBreakerStorage
from regional_etl.policies import FX_RETRY_POLICY, fx_retry_policy
from regional_etl_tests.fx_faults import FaultConfig, FaultyFXServer

from .conftest import (
    DATE,
    MakeResources,
    log_messages,
    observed_transitions,
    run_logs,
    step_failure_description,
)

# Step retries in milliseconds, so a test can afford them; production waits seconds.
fast_fx_rates = build_fx_rates_asset(fx_retry_policy(max_retries=2, delay_seconds=0.01))


def retries_of(instance: DagsterInstance, run_id: str) -> int:
    return len(run_logs(instance, run_id, DagsterEventType.STEP_UP_FOR_RETRY))


def materialization_metadata(result: Any) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node("fx_rates")
    return {key: value.value for key, value in materialization.metadata.items()}


def test_half_the_requests_failing_still_succeeds_through_retries(
    spark, instance: DagsterInstance, fx_server: FaultyFXServer, make_resources: MakeResources
):
    # Seed 9 draws 503, 503, 503, then 200. Two HTTP attempts per call: the first step attempt
    # uses both on 503s and fails; the step retry gets a 503, retries, and gets the 200.
    fx_server.set_faults(FaultConfig(error_rate=0.5, seed=9))
    result = materialize(
        [fast_fx_rates],
        partition_key=DATE,
        resources=make_resources(max_attempts=2),
        instance=instance,
    )

    assert result.success
    metadata = materialization_metadata(result)
    assert metadata["http_attempts"] == 2 and metadata["http_retries"] == 1
    assert metadata["step_attempt"] == 2
    assert metadata["breaker"]["state"] == "closed" and metadata["breaker"]["fail_counter"] == 0
    assert fx_server.stats() == {"total": 4, "by_status": {"200": 1, "503": 3}}

    # The retries are in the run log: the client's, the step's reason, and Dagster's event.
    assert retries_of(instance, result.run_id) == 1
    messages = log_messages(instance, result.run_id)
    client_retries = [m for m in messages if "FX request" in m and "retry 1/1" in m]
    assert len(client_retries) == 2, messages  # one per step attempt
    assert any("step retry 1 of 2 follows" in m and "HTTP 503" in m for m in messages)

    table = make_resources()["warehouse"].table(Table.FX_RATES)
    rows = spark.read.format("delta").load(table).collect()
    assert {(str(r.order_date), r.currency) for r in rows} == {(DATE, c) for c in CURRENCIES}


# Another run process on the same instance and the same breaker file. It imports and warms up
# first, then waits for "go" so that its run starts well inside the breaker's reset timeout.
CHILD_RUN = """
import json, sys
from dagster import DagsterInstance, asset, materialize
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import deserialize_value
from regional_etl.assets.reference import fx_rates
from regional_etl.resources.fx import FXRatesResource
from regional_etl.spark.resource import SparkResource
from regional_etl.resources.warehouse import WarehouseResource

args = json.loads(sys.argv[1])

@asset
def warm_up() -> None:
    return None

materialize([warm_up], instance=DagsterInstance.ephemeral())
instance = DagsterInstance.from_ref(deserialize_value(args["instance_ref"], InstanceRef))
resources = {
    "spark": SparkResource(),
    "warehouse": WarehouseResource(landing_root=args["root"], warehouse_root=args["root"]),
    "fx": FXRatesResource(**args["fx"]),
}
print("ready", flush=True)
sys.stdin.readline()
result = materialize([fx_rates], partition_key=args["date"], resources=resources,
                     instance=instance, raise_on_error=False)
print(json.dumps({"success": result.success, "run_id": result.run_id}), flush=True)
"""


def test_outage_opens_the_breaker_for_other_processes_until_a_probe_closes_it(
    spark,
    instance: DagsterInstance,
    tmp_path: Path,
    fx_server: FaultyFXServer,
    make_resources: MakeResources,
    breaker_url: str,
):
    # Long enough for the fast-failing runs below to happen inside it on a busy 2-core machine.
    reset_timeout = 10.0
    fx = {
        "base_url": fx_server.url,
        "breaker_storage_url": breaker_url,
        "breaker_fail_max": 2,
        "breaker_reset_timeout_seconds": reset_timeout,
        "max_attempts": 1,
        "backoff_base_seconds": 0.01,
    }
    resources = make_resources(**fx)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD_RUN,
            json.dumps(
                {
                    "instance_ref": serialize_value(instance.get_ref()),
                    "root": str(tmp_path / "child"),
                    "fx": fx,
                    "date": DATE,
                }
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"

        # Total outage. Run 1: the call fails (breaker 1/2) and the step is retried; the retry
        # fails too and opens the breaker; the second step retry is refused by the breaker and
        # not retried again. One HTTP attempt per call, so two requests in all.
        fx_server.set_faults(FaultConfig(outage_seconds=3600))
        tripped = materialize(
            [fast_fx_rates],
            partition_key=DATE,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert not tripped.success
        assert fx_server.stats()["total"] == 2
        assert retries_of(instance, tripped.run_id) == 2
        assert observed_transitions(instance, tripped.run_id) == ["closed -> open"]
        assert "is open" in step_failure_description(instance, tripped.run_id)

        # Run 2, right away, in another process (the production asset, same instance and same
        # breaker file): it fails fast too.
        out, _ = child.communicate("go\n", timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    report = json.loads(out.strip().splitlines()[-1])
    assert report["success"] is False
    assert retries_of(instance, report["run_id"]) == 0
    message = step_failure_description(instance, report["run_id"])
    assert "is open" in message and "will try again at" in message, message
    assert fx_server.stats()["total"] == 2  # no request reached the server

    # Run 3, this process: fails fast, no step retry, no request, says when it tries again.
    refused = materialize(
        [fast_fx_rates],
        partition_key=DATE,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not refused.success and retries_of(instance, refused.run_id) == 0
    message = step_failure_description(instance, refused.run_id)
    assert "is open" in message and "will try again at" in message
    assert "not retried" in message
    assert fx_server.stats()["total"] == 2

    # The service recovers. Past the reset timeout, one caller gets the probe: while another
    # process holds the probe lease, a run fails fast without a request...
    fx_server.set_faults(FaultConfig())
    storage = SQLiteCircuitBreakerStorage(breaker_url.removeprefix("sqlite:///"), "fx-rates")
    assert storage.opened_at is not None
    time.sleep(
        max((storage.opened_at - dt.datetime.now(dt.UTC)).total_seconds() + reset_timeout, 0) + 0.1
    )
    token = storage.claim_probe(60)
    assert token is not None
    probing = materialize(
        [fast_fx_rates],
        partition_key=DATE,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not probing.success
    assert "another caller is sending the one probe" in step_failure_description(
        instance, probing.run_id
    )
    assert fx_server.stats()["total"] == 2

    # ...and once it is released, the next run is the probe: one request closes the breaker.
    storage.release_probe(token)
    recovered = materialize(
        [fast_fx_rates], partition_key=DATE, resources=resources, instance=instance
    )
    assert recovered.success
    assert fx_server.stats() == {"total": 3, "by_status": {"200": 1, "503": 2}}
    metadata = materialization_metadata(recovered)
    assert metadata["http_attempts"] == 1 and metadata["breaker"]["state"] == "closed"
    assert [t.split(" at ")[0] for t in metadata["breaker_transitions"]] == [
        "open -> half-open",
        "half-open -> closed",
    ]
    assert observed_transitions(instance, recovered.run_id) == [
        "open -> half-open",
        "half-open -> closed",
    ]
    assert storage.state == "closed" and storage.counter == 0


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (FaultConfig(error_rate=1.0, status=404), "answered HTTP 404: injected fault"),
        (FaultConfig(error_rate=1.0, status=422), "answered HTTP 422: injected fault"),
        (FaultConfig(bad_payload=True), "not the Frankfurter shape"),
    ],
    ids=["404", "422", "bad-payload"],
)
def test_permanent_errors_fail_at_once_without_retry(
    instance: DagsterInstance,
    fx_server: FaultyFXServer,
    make_resources: MakeResources,
    faults: FaultConfig,
    expected: str,
):
    # The production asset and policy: a wrongly retried step would wait seconds and show
    # STEP_UP_FOR_RETRY.
    assert FX_RETRY_POLICY.max_retries > 0
    fx_server.set_faults(faults)
    result = materialize(
        [fx_rates],
        partition_key=DATE,
        resources=make_resources(),
        instance=instance,
        raise_on_error=False,
    )

    assert not result.success
    assert fx_server.stats()["total"] == 1
    assert retries_of(instance, result.run_id) == 0
    message = step_failure_description(instance, result.run_id)
    assert message.startswith(f"fx_rates {DATE}: FX service {fx_server.url}/{DATE}?")
    assert expected in message and "not retried" in message
    assert not [m for m in log_messages(instance, result.run_id) if "retry" in m.lower()]
    # A bad answer is not the service being down: the breaker does not count it.
    fx = make_resources()["fx"]
    assert fx.client is not None and fx.client.breaker.snapshot()["fail_counter"] == 0


def test_a_hanging_server_times_out_and_the_run_ends(
    instance: DagsterInstance, fx_server: FaultyFXServer, make_resources: MakeResources
):
    fx_server.set_faults(FaultConfig(hang=True))
    asset = build_fx_rates_asset(fx_retry_policy(max_retries=1, delay_seconds=0.01))
    started = time.monotonic()
    result = materialize(
        [asset],
        partition_key=DATE,
        resources=make_resources(timeout_seconds=0.5, max_attempts=2),
        instance=instance,
        raise_on_error=False,
    )
    elapsed = time.monotonic() - started

    assert elapsed < 60  # a hang guard only: two step attempts of two 0.5 s timeouts each
    assert not result.success
    assert retries_of(instance, result.run_id) == 1
    assert fx_server.stats() == {"total": 4, "by_status": {"hang": 4}}
    message = step_failure_description(instance, result.run_id)
    assert "transient FX failure" in message and "timed out" in message
    gave_up = "gave up after 2 step attempts of 2 HTTP attempt(s) each"
    assert any(gave_up in m for m in log_messages(instance, result.run_id))


def test_in_a_range_run_a_date_the_service_rejects_fails_alone(
    spark, instance: DagsterInstance, fx_server: FaultyFXServer, make_resources: MakeResources
):
    """A 4xx for one date is that date's problem: the other dates of the range run publish,
    each with its own materialization, and only the rejected ones are failed partitions."""
    from dagster import AssetKey, AssetPartitionStatus

    from regional_etl.partitions import daily_partitions
    from regional_etl_tests.oracle import ecb_usd_per_unit

    dates = ["2024-03-11", "2024-03-12", "2024-03-13", "2024-03-14"]
    # Seeded draws: a reproducible mix of rejected and answered dates.
    fx_server.set_faults(FaultConfig(error_rate=0.5, status=422, seed=3))
    result = materialize(
        [fast_fx_rates],
        resources=make_resources(),
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": dates[0],
            "dagster/asset_partition_range_end": dates[-1],
        },
        raise_on_error=False,
    )
    assert not result.success
    assert retries_of(instance, result.run_id) == 0  # a rejection is not retried
    status = instance.get_status_by_partition(AssetKey("fx_rates"), dates, daily_partitions)
    assert status is not None
    failed = {d for d, s in status.items() if s == AssetPartitionStatus.FAILED}
    published = {d for d, s in status.items() if s == AssetPartitionStatus.MATERIALIZED}
    assert failed and published and failed | published == set(dates), status
    message = step_failure_description(instance, result.run_id)
    assert all(d in message for d in failed) and not any(d in message for d in published)
    table = spark.read.format("delta").load(make_resources()["warehouse"].table(Table.FX_RATES))
    by_date: dict[str, dict[str, Any]] = {}
    for row in table.collect():
        by_date.setdefault(str(row["order_date"]), {})[row["currency"]] = row["usd_per_unit"]
    assert set(by_date) == published
    for date in published:
        assert by_date[date] == ecb_usd_per_unit(dt.date.fromisoformat(date)), date
