"""FX faults end to end (issue 13, scenario 6): `fx_rates` materializations through the real FX
resource against the fault-injecting FX server, into a real Delta table. Whatever the service
does, the table never holds a missing or wrong rate: a date either gets the ECB rates exactly
(as the oracle derives them from the raw CSV) or no row at all, and the failure names the date
and, where one currency is at fault, the currency.

Already covered elsewhere and not repeated: retries and Retry-After (fx/test_fx_resource.py),
the breaker across processes, step retries, 404/422/bad payload and hangs in a run
(resilience/test_fx_resilience.py).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, materialize

from regional_etl.assets.reference import build_fx_rates_asset, fx_rates
from regional_etl.contract import CURRENCIES, Table
from regional_etl.resources.fx import FXRatesResource
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource
from regional_etl_tests import oracle
from regional_etl_tests.conftest import FAST_FX_CLIENT, TEST_SPARK_CONF
from regional_etl_tests.fx_faults import FaultConfig, FaultyFXServer

# Weekdays: one FX request per date (a weekend date also asks for the latest business day).
BEFORE, DATE = "2024-03-14", "2024-03-15"
# Transient faults are not retried by the step here: the client's retries are the subject, and
# step retries would only repeat them seconds later.
no_step_retry_fx_rates = build_fx_rates_asset(retry_policy=None)

# (fault, client overrides, what the failure says besides the date). Written before the run.
FAULTS: list[tuple[str, FaultConfig, dict[str, Any], list[str]]] = [
    ("timeouts", FaultConfig(hang=True), {"timeout_seconds": 0.3}, ["timed out", "EUR,INR"]),
    ("a burst of 5xx", FaultConfig(error_rate=1.0, status=502), {}, ["HTTP 502", "EUR,INR"]),
    ("malformed JSON", FaultConfig(malformed_json=True), {}, ["not the Frankfurter shape"]),
    ("a reply missing one currency", FaultConfig(missing_currency="INR"), {}, ["no rate for INR"]),
    ("a zero rate", FaultConfig(rates={"EUR": 0}), {}, ["rate for EUR on 2024-03-15 is 0"]),
    (
        "a negative rate",
        FaultConfig(rates={"INR": -83.1}),
        {},
        ["rate for INR on 2024-03-15 is -83.1", "not a positive number"],
    ),
]


def step_failure(instance: DagsterInstance, run_id: str) -> str:
    (entry,) = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    assert entry.dagster_event is not None
    data = entry.dagster_event.step_failure_data
    assert data.user_failure_data is not None, data.error
    return data.user_failure_data.description or ""


def rates_in_table(spark: Any, path: str) -> dict[tuple[str, str], Any]:
    return {
        (str(r.order_date), r.currency): r.usd_per_unit
        for r in spark.read.format("delta").load(path).collect()
    }


def ecb(date: str) -> dict[tuple[str, str], Any]:
    return {(date, c): v for c, v in oracle.ecb_usd_per_unit(dt.date.fromisoformat(date)).items()}


@pytest.mark.slow
def test_fx_faults_never_leave_a_missing_or_wrong_rate(
    spark: Any,
    instance: DagsterInstance,
    tmp_path: Path,
    fx_server: FaultyFXServer,
    breaker_url: str,
) -> None:
    def resources(**fx: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "base_url": fx_server.url,
            "breaker_storage_url": breaker_url,
            **FAST_FX_CLIENT,
            "max_attempts": 4,
            **fx,
        }
        return {
            "spark": SparkResource(session_config=TEST_SPARK_CONF),
            "warehouse": WarehouseResource(
                landing_root=str(tmp_path / "landing"), warehouse_root=str(tmp_path / "warehouse")
            ),
            "fx": FXRatesResource(**config),
        }

    table = str(tmp_path / "warehouse" / Table.FX_RATES.value)
    assert set(CURRENCIES) == {"EUR", "INR", "USD"}

    # A burst of 503s that the client's retries outlast (seed 9 draws 503, 503, 503, then 200),
    # on a slow service: the rates are the ECB's, exactly.
    fx_server.set_faults(FaultConfig(error_rate=0.5, seed=9, latency_ms=100))
    ok = materialize(
        [no_step_retry_fx_rates], partition_key=BEFORE, resources=resources(), instance=instance
    )
    assert ok.success
    assert fx_server.stats()["by_status"] == {"200": 1, "503": 3}
    assert rates_in_table(spark, table) == ecb(BEFORE)

    for kind, faults, client, says in FAULTS:
        fx_server.set_faults(faults)
        transient = faults.hang or faults.error_rate > 0
        # Bad answers go through the production asset: they must fail at once, not be retried.
        asset = no_step_retry_fx_rates if transient else fx_rates
        failed = materialize(
            [asset],
            partition_key=DATE,
            resources=resources(**client),
            instance=instance,
            raise_on_error=False,
        )
        assert not failed.success, kind
        message = step_failure(instance, failed.run_id)
        assert message.startswith(f"fx_rates {DATE}: "), (kind, message)
        for fragment in says:
            assert fragment in message, (kind, message)
        # Nothing written for the date, and the other date untouched.
        assert rates_in_table(spark, table) == ecb(BEFORE), kind

    # The service heals: the date gets its rates, exactly.
    fx_server.set_faults(FaultConfig())
    healed = materialize([fx_rates], partition_key=DATE, resources=resources(), instance=instance)
    assert healed.success
    assert rates_in_table(spark, table) == ecb(BEFORE) | ecb(DATE)
