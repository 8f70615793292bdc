"""The run failure alert sensor posts to a real local webhook receiver about real failed runs,
evaluated tick by tick as the daemon does (cursor included)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetMaterialization,
    BackfillPolicy,
    DagsterInstance,
    DagsterRun,
    Definitions,
    Failure,
    SensorDefinition,
    asset,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from regional_etl import alerts, settings
from regional_etl.alerts import (
    ALERT_SENSORS,
    ALERTED_TAG,
    AlertDeliveryError,
    AlertWebhookResource,
    alert_resources,
    redact_url,
    run_failure_alert,
)
from regional_etl.assets.reference import build_fx_rates_asset, fx_rates
from regional_etl.partitions import daily_partitions
from regional_etl.policies import fx_retry_policy
from regional_etl_tests.fx_faults import FaultConfig, FaultyFXServer

from .conftest import DATE, MakeResources, WebhookReceiver

PROJECT = Path(__file__).resolve().parents[2]


def failed_fx_run(
    instance: DagsterInstance, fx_server: FaultyFXServer, make_resources: MakeResources
) -> DagsterRun:
    """A real `fx_rates` run that fails: the service answers garbage."""
    fx_server.set_faults(FaultConfig(bad_payload=True))
    result = materialize(
        [fx_rates],
        partition_key=DATE,
        resources=make_resources(),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return run


def evaluate(
    sensor: SensorDefinition,
    instance: DagsterInstance,
    webhook: AlertWebhookResource,
    cursor: str | None = None,
):
    """One tick of `sensor`, its context exited here: a context left open keeps its resources
    and, collected in a later test, restores that test's Dagster context to a deleted one."""
    with build_sensor_context(
        instance=instance,
        cursor=cursor,
        sensor_name=sensor.name,
        resources={"alert_webhook": webhook},
    ) as context:
        return sensor.evaluate_tick(context)


def start_sensor(instance: DagsterInstance, webhook: AlertWebhookResource) -> str:
    """The sensor's first tick, as the daemon runs it, on an instance with no failed run yet."""
    result = evaluate(run_failure_alert, instance, webhook)
    assert result.skip_message == "no failed run" and result.cursor
    return result.cursor


def next_tick(instance: DagsterInstance, webhook: AlertWebhookResource, cursor: str | None):
    """One more tick from `cursor`: the sensor handles the run failures recorded since."""
    return evaluate(run_failure_alert, instance, webhook, cursor)


@pytest.fixture
def instance_with_run_retries() -> Iterator[DagsterInstance]:
    """A test instance with the project's run retry settings (from dagster.yaml)."""
    config = yaml.safe_load((PROJECT / "dagster.yaml").read_text())
    with instance_for_test(overrides={"run_retries": config["run_retries"]}) as instance:
        yield instance


def test_a_failed_run_reaches_the_webhook(
    instance_with_run_retries: DagsterInstance,
    fx_server: FaultyFXServer,
    make_resources: MakeResources,
    webhook: WebhookReceiver,
    capfd: pytest.CaptureFixture[str],
):
    instance = instance_with_run_retries
    resource = AlertWebhookResource(url=webhook.url, ui_base_url="http://127.0.0.1:3000/")
    cursor = start_sensor(instance, resource)
    run = failed_fx_run(instance, fx_server, make_resources)
    capfd.readouterr()
    tick = next_tick(instance, resource, cursor)
    logged = capfd.readouterr().err  # the sensor's log (its tick log under the daemon)
    assert tick.skip_message == "alerted 1 failed run(s)" and tick.cursor != cursor

    (post,) = webhook.received
    assert post["path"] == "/hooks/regional-etl?token=s3cret"
    assert post["content_type"] == "application/json"
    body = post["body"]
    assert body["event"] == "run_failure"
    # The headline: what failed, in which job, why as the step said it, and where to look.
    assert body["text"].startswith(
        f"fx_rates {DATE} failed (asset run of fx_rates): fx_rates {DATE}: FX service "
    )
    assert body["text"].endswith(f"(http://127.0.0.1:3000/runs/{run.run_id})")
    assert body["assets"] == ["fx_rates"] and body["partitions"] == [DATE]
    assert body["backfill_id"] is None and body["job"] == "asset run of fx_rates"
    assert body["run_id"] == run.run_id and body["job_name"] == run.job_name
    assert body["partition"] == DATE
    assert body["partition_tags"]["dagster/partition"] == DATE
    assert body["link"] == f"/runs/{run.run_id}"
    assert body["url"] == f"http://127.0.0.1:3000/runs/{run.run_id}"
    # A step failure is not retried as a whole run (the step's RetryPolicy had its say).
    assert body["retry_number"] == 0 and body["will_retry"] is False
    (step,) = body["step_failures"]
    assert step["step_key"] == "fx_rates"
    assert "not the Frankfurter shape" in step["error"] and "not retried" in step["error"]
    assert body["error"] == f"fx_rates: {step['error']}"
    # The sensor logs what it sent, and never the token in the webhook's URL.
    sent = [line for line in logged.splitlines() if "Alert sent" in line]
    assert len(sent) == 1 and run.run_id in sent[0] and "HTTP 200" in sent[0]
    assert "s3cret" not in logged

    # The next tick starts after that run: one alert per failure.
    assert next_tick(instance, resource, tick.cursor).skip_message == "no failed run"
    assert len(webhook.received) == 1
    tagged = instance.get_run_by_id(run.run_id)
    assert tagged is not None and tagged.tags.get(ALERTED_TAG)


def test_an_undeliverable_alert_fails_the_tick_with_the_reason_and_goes_out_next_tick(
    instance: DagsterInstance,
    fx_server: FaultyFXServer,
    make_resources: MakeResources,
    webhook: WebhookReceiver,
):
    """The tick fails at the alert the webhook refused, so the cursor stays before that run: the
    next tick sends it, and not the alert of the run before it, which went out."""
    resource = AlertWebhookResource(url=webhook.url)
    cursor = start_sensor(instance, resource)
    sent = failed_fx_run(instance, fx_server, make_resources)
    refused = failed_fx_run(instance, fx_server, make_resources)
    webhook.statuses.extend([200, 410])
    with pytest.raises(AlertDeliveryError) as caught:  # the daemon shows it on the failed tick
        next_tick(instance, resource, cursor)
    reason = str(caught.value)
    assert f"alert for run {refused.run_id} not delivered" in reason and "HTTP 410" in reason
    assert [p["body"]["run_id"] for p in webhook.received] == [sent.run_id, refused.run_id]

    retried = next_tick(instance, resource, cursor)  # a failed tick keeps its cursor
    assert retried.skip_message == "alerted 1 failed run(s)"
    assert [p["body"]["run_id"] for p in webhook.received][2:] == [refused.run_id]
    assert next_tick(instance, resource, retried.cursor).skip_message == "no failed run"
    assert len(webhook.received) == 3


def test_delivery_is_retried_on_5xx_but_not_on_4xx(webhook: WebhookReceiver):
    resource = AlertWebhookResource(url=webhook.url, backoff_seconds=0.01)
    webhook.statuses.extend([503, 502])
    delivery = resource.send({"run_id": "r1"})
    assert delivery is not None and (delivery.status, delivery.attempts) == (200, 3)
    assert [p["answered"] for p in webhook.received] == [503, 502, 200]

    webhook.received.clear()
    webhook.statuses.append(404)
    with pytest.raises(AlertDeliveryError, match="HTTP 404") as caught:
        resource.send({"run_id": "r2"})
    assert len(webhook.received) == 1
    assert "s3cret" not in str(caught.value)

    webhook.received.clear()
    webhook.statuses.extend([503, 503, 503])
    with pytest.raises(AlertDeliveryError, match="failed 3 attempt"):
        resource.send({"run_id": "r3"})
    assert len(webhook.received) == 3


def test_without_a_url_the_alert_is_only_logged(
    instance: DagsterInstance,
    fx_server: FaultyFXServer,
    make_resources: MakeResources,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
):
    monkeypatch.delenv(settings.ALERT_WEBHOOK_URL.name, raising=False)
    resource = alert_resources()["alert_webhook"]
    assert resource.url is None
    cursor = start_sensor(instance, resource)
    run = failed_fx_run(instance, fx_server, make_resources)
    capfd.readouterr()
    next_tick(instance, resource, cursor)
    (line,) = [x for x in capfd.readouterr().err.splitlines() if "Alert not sent" in x]
    assert f"({settings.ALERT_WEBHOOK_URL.name} is unset)" in line and run.run_id in line


def test_the_sensor_is_on_by_default_and_loads_with_its_resource():
    (sensor,) = ALERT_SENSORS
    assert sensor is run_failure_alert
    assert sensor.default_status.value == "RUNNING"
    assert sensor.required_resource_keys == {"alert_webhook"}
    # What definitions.py adds: the sensor and its resource load together.
    Definitions.validate_loadable(Definitions(sensors=ALERT_SENSORS, resources=alert_resources()))
    assert redact_url("https://hooks.example.com:8443/services/T0/B1/xyz?k=v") == (
        "https://hooks.example.com:8443/..."
    )


def test_a_run_that_failed_before_the_first_tick_is_alerted_once(
    instance: DagsterInstance,
    fx_server: FaultyFXServer,
    make_resources: MakeResources,
    webhook: WebhookReceiver,
):
    """A backfill that failed on a new instance before the daemon's first tick must page
    someone: the first tick looks back ALERT_LOOKBACK, and a tag on the run keeps it to one
    alert, even when a reset cursor looks back over it again. Evaluated as the code location
    loads it."""
    from regional_etl.definitions import defs

    sensor = defs.resolve_sensor_def("run_failure_alert")
    resource = AlertWebhookResource(url=webhook.url)
    run = failed_fx_run(instance, fx_server, make_resources)

    first = evaluate(sensor, instance, resource)
    assert first.skip_message == "alerted 1 failed run(s)"
    assert [p["body"]["run_id"] for p in webhook.received] == [run.run_id]

    again = evaluate(sensor, instance, resource, first.cursor)
    assert again.skip_message == "no failed run"
    restarted = evaluate(sensor, instance, resource)  # cursor reset
    assert restarted.skip_message == "alerted 0 failed run(s)"
    assert restarted.cursor == first.cursor
    # The cursor of the `run_failure_sensor` this sensor replaced also starts a look back.
    replaced = '{"__class__": "RunStatusSensorCursor", "record_id": -1, "update_timestamp": null}'
    upgraded = evaluate(sensor, instance, resource, replaced)
    assert upgraded.cursor == first.cursor
    assert len(webhook.received) == 1


def test_a_tick_alerts_at_most_its_batch_and_the_next_tick_the_rest(
    instance: DagsterInstance,
    fx_server: FaultyFXServer,
    make_resources: MakeResources,
    webhook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(alerts, "ALERTS_PER_TICK", 1)
    resource = AlertWebhookResource(url=webhook.url)
    cursor = start_sensor(instance, resource)
    runs = [failed_fx_run(instance, fx_server, make_resources) for _ in range(2)]
    first = next_tick(instance, resource, cursor)
    assert first.skip_message == "alerted 1 failed run(s) (more next tick)"
    second = next_tick(instance, resource, first.cursor)
    assert second.skip_message == "alerted 1 failed run(s) (more next tick)"
    assert next_tick(instance, resource, second.cursor).skip_message == "no failed run"
    assert [p["body"]["run_id"] for p in webhook.received] == [r.run_id for r in runs]


def test_an_fx_outage_alert_says_the_step_gave_up_after_its_retries(
    instance: DagsterInstance,
    fx_server: FaultyFXServer,
    make_resources: MakeResources,
    webhook: WebhookReceiver,
):
    resource = AlertWebhookResource(url=webhook.url)
    cursor = start_sensor(instance, resource)
    fx_server.set_faults(FaultConfig(outage_seconds=600))
    asset_def = build_fx_rates_asset(fx_retry_policy(max_retries=1, delay_seconds=0.01))
    result = materialize(
        [asset_def],
        partition_key=DATE,
        resources=make_resources(max_attempts=2),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    next_tick(instance, resource, cursor)
    (post,) = webhook.received
    text = post["body"]["text"]
    assert text.startswith(f"fx_rates {DATE} failed (asset run of fx_rates): fx_rates {DATE}: ")
    assert "gave up after 2 step attempts of 2 HTTP attempt(s) each" in text
    assert "retryable" not in text and "HTTP 503" in text


RANGE = ("2024-03-08", "2024-03-10")


@asset(
    name="daily_revenue",
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    output_required=False,
)
def stand_in_daily_revenue(context):
    """Publishes the range but its middle date, which has a region missing."""
    for date in context.partition_keys:
        if date != "2024-03-09":
            yield AssetMaterialization(context.asset_key, partition=date)
    raise Failure(
        description="daily_revenue not materialized for dates with regions that have no "
        "published orders: {'2024-03-09': ['ap-south']}",
        allow_retries=False,
    )


def test_a_range_run_of_a_backfill_is_alerted_with_the_partitions_that_failed(
    instance: DagsterInstance, webhook: WebhookReceiver
):
    resource = AlertWebhookResource(url=webhook.url)
    cursor = start_sensor(instance, resource)
    result = materialize(
        [stand_in_daily_revenue],
        instance=instance,
        raise_on_error=False,
        tags={
            "dagster/asset_partition_range_start": RANGE[0],
            "dagster/asset_partition_range_end": RANGE[1],
            "dagster/backfill": "abcdefgh",
        },
    )
    assert not result.success
    next_tick(instance, resource, cursor)
    (post,) = webhook.received
    body = post["body"]
    assert body["assets"] == ["daily_revenue"] and body["partitions"] == ["2024-03-09"]
    assert body["backfill_id"] == "abcdefgh"
    assert body["text"] == (
        "daily_revenue 2024-03-09 failed (backfill abcdefgh, asset run of daily_revenue): "
        "daily_revenue not materialized for dates with regions that have no published orders: "
        f"{{'2024-03-09': ['ap-south']}} (/runs/{result.run_id})"
    )
