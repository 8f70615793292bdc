"""Delivery deadlines on a real instance, real landing folders and a real webhook receiver, with
the sensor evaluated at times the test sets: a drop not in is pending before its deadline,
missing (failed check, one alert) after it, and its check passes once it lands and is
ingested."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetMaterialization,
    DagsterInstance,
    SensorResult,
    build_sensor_context,
    materialize,
)

from regional_etl.alerts import AlertWebhookResource
from regional_etl.assets.bronze import raw_orders
from regional_etl.automation.deadlines import (
    CHECK_NAME,
    RAW_ORDERS,
    DeliveryDeadlineResource,
    delivered_by_deadline,
    delivery_deadline_sensor,
    due_partitions,
    evaluate_deadlines,
)
from regional_etl.contract import REGIONS
from regional_etl.generate import write_drop
from regional_etl.partitions import DateRegion
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl_tests.conftest import Pipeline

from .conftest import WebhookReceiver

DATE, LATE = "2024-03-08", "ap-south"
KEY = f"{DATE}|{LATE}"
CHECK = AssetCheckKey(RAW_ORDERS, CHECK_NAME)
LINE = (
    '{"order_id": "A1", "user_id": "u", "amount": 5, "currency": "INR", '
    '"order_ts": "2024-03-08T10:00:00Z"}'
)


def at(hour: int, minute: int = 0) -> dt.datetime:
    """A time on the day after DATE, in UTC (the partitions' default time zone)."""
    return dt.datetime(2024, 3, 9, hour, minute, tzinfo=dt.UTC)


def tick(
    instance: DagsterInstance,
    landing: Path,
    webhook: AlertWebhookResource,
    cursor: str | None,
    now: dt.datetime,
) -> SensorResult:
    """One sensor tick at `now` on a fresh context (as after a daemon restart: only the cursor
    carries over), its check results recorded on the instance as the daemon records them."""
    # Exited here: a context left open is collected in a later test and restores that test's
    # Dagster context to a deleted one.
    with build_sensor_context(instance=instance, cursor=cursor, sensor_name="deadlines") as context:
        result = evaluate_deadlines(
            context,
            WarehouseResource(landing_root=str(landing)),
            webhook,
            DeliveryDeadlineResource(lookback_days=1),
            now,
        )
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def check_status(instance: DagsterInstance) -> dict[str, str]:
    """The check's status per partition, as the UI's partition view of the check computes it:
    a result counts only while it is about the partition's latest materialization."""
    infos = instance.event_log_storage.get_asset_check_partition_info([CHECK])
    return {str(i.partition_key): i.latest_execution_status.value for i in infos if i.is_current}


def ingested_elsewhere(instance: DagsterInstance, keys: list[str]) -> None:
    for key in keys:
        instance.report_runless_asset_event(AssetMaterialization("raw_orders", partition=key))


def test_deadline_is_hours_after_the_end_of_the_day_per_region() -> None:
    default = DeliveryDeadlineResource()
    assert default.deadline(DateRegion(DATE, "eu-west")) == at(6)
    later = DeliveryDeadlineResource(hours_after_day_end=4, region_hours="ap-south=9.5")
    assert later.deadline(DateRegion(DATE, "ap-south")) == at(9, 30)
    assert later.deadline(DateRegion(DATE, "us-east")) == at(4)
    with pytest.raises(ValueError, match="'mars=3' is not <region>=<hours>"):
        DeliveryDeadlineResource(region_hours="mars=3").hours("eu-west")


def test_a_missing_drop_is_pending_then_fails_and_alerts_once_then_passes_when_ingested(
    pipeline: Pipeline, instance: DagsterInstance, webhook: WebhookReceiver
) -> None:
    resource = AlertWebhookResource(url=webhook.url, ui_base_url="http://127.0.0.1:3000")
    # Every other drop of the watched days is in; ap-south of DATE is half-written.
    previous = [f"2024-03-07|{r}" for r in REGIONS]
    ingested_elsewhere(instance, previous + [f"{DATE}|{r}" for r in REGIONS if r != LATE])
    write_drop(pipeline.landing, DATE, LATE, [LINE], success=False)

    # Before the deadline (06:00 the next day): pending, nothing fails, nobody is paged.
    early = tick(instance, pipeline.landing, resource, None, at(5, 59))
    assert list(early.asset_events) == [] and webhook.received == []
    assert json.loads(early.cursor or "")["missing"] == {}
    assert check_status(instance) == {}

    # Past it: a failed check on that partition, naming region, date and expected path.
    late = tick(instance, pipeline.landing, resource, early.cursor, at(6, 0))
    (evaluation,) = late.asset_events
    assert isinstance(evaluation, AssetCheckEvaluation)
    expected = pipeline.landing.resolve() / f"region={LATE}" / f"date={DATE}"
    assert evaluation.partition == KEY and not evaluation.passed
    assert evaluation.description == (
        f"region {LATE}, date {DATE}: landing drop missing past its deadline "
        f"2024-03-09T06:00:00+00:00: expected {expected}/*.jsonl and {expected}/_SUCCESS; the "
        "folder exists but has no _SUCCESS marker yet"
    )
    assert check_status(instance) == {KEY: "FAILED"}
    # ... and one alert through the failure webhook.
    (post,) = webhook.received
    body = post["body"]
    assert body["event"] == "drop_missing" and body["alert_id"] == f"drop_missing:{KEY}"
    assert (body["region"], body["date"], body["partition"]) == (LATE, DATE, KEY)
    assert body["expected_path"] == str(expected)
    assert body["summary"] == evaluation.description
    assert (body["asset"], body["check"]) == ("raw_orders", CHECK_NAME)
    assert body["url"] == "http://127.0.0.1:3000/assets/raw_orders?view=checks"

    # Later ticks, each on a new context (a restarted daemon has only the cursor): no repeat.
    later = tick(instance, pipeline.landing, resource, late.cursor, at(7))
    again = tick(instance, pipeline.landing, resource, later.cursor, at(12))
    assert list(later.asset_events) == list(again.asset_events) == []
    assert len(webhook.received) == 1

    # The drop lands and is ingested: the check runs after raw_orders in that run and passes.
    write_drop(pipeline.landing, DATE, LATE, [LINE])
    run = materialize(
        [raw_orders, delivered_by_deadline],
        partition_key=KEY,
        resources={**pipeline.resources, "delivery_deadlines": DeliveryDeadlineResource()},
        instance=instance,
    )
    (passed,) = run.get_asset_check_evaluations()
    assert passed.passed and passed.partition == KEY
    assert (
        passed.description
        == f"region {LATE}, date {DATE}: drop ingested (due 2024-03-09T06:00:00+00:00)"
    )
    assert check_status(instance) == {KEY: "SUCCEEDED"}
    settled = tick(instance, pipeline.landing, resource, again.cursor, at(13))
    assert list(settled.asset_events) == [] and len(webhook.received) == 1
    assert json.loads(settled.cursor or "")["missing"] == {}


def test_an_alert_the_webhook_refuses_is_sent_on_the_next_tick_without_a_second_failure(
    tmp_path: Path, instance: DagsterInstance, webhook: WebhookReceiver
) -> None:
    resource = AlertWebhookResource(url=webhook.url, backoff_seconds=0.01)
    previous = [f"2024-03-07|{r}" for r in REGIONS]
    ingested_elsewhere(instance, previous + [f"{DATE}|{r}" for r in REGIONS if r != LATE])
    webhook.statuses.extend([503, 503, 503])
    first = tick(instance, tmp_path, resource, None, at(6, 30))
    assert [e.partition for e in first.asset_events] == [KEY]
    assert json.loads(first.cursor or "")["missing"][KEY]["alerted"] is False
    assert [p["answered"] for p in webhook.received] == [503, 503, 503]

    second = tick(instance, tmp_path, resource, first.cursor, at(7))
    assert list(second.asset_events) == []
    assert [p["answered"] for p in webhook.received][3:] == [200]
    assert "folder does not exist" in webhook.received[-1]["body"]["found"]
    third = tick(instance, tmp_path, resource, second.cursor, at(8))
    assert list(third.asset_events) == [] and len(webhook.received) == 4


def test_the_sensor_evaluates_at_the_time_of_its_tick(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    """The decorated sensor, as the daemon calls it, on an empty landing zone: every drop whose
    deadline passed within the lookback is missing, today's are not due yet."""
    deadlines = DeliveryDeadlineResource(lookback_days=2)
    resources: dict[str, Any] = {
        "warehouse": WarehouseResource(landing_root=str(tmp_path)),
        "alert_webhook": AlertWebhookResource(),
        "delivery_deadlines": deadlines,
    }
    with build_sensor_context(
        instance=instance, resources=resources, sensor_name=delivery_deadline_sensor.name
    ) as context:
        before = {str(p) for p, _ in due_partitions(deadlines, dt.datetime.now(dt.UTC))}
        data = delivery_deadline_sensor.evaluate_tick(context)
    after = {str(p) for p, _ in due_partitions(deadlines, dt.datetime.now(dt.UTC))}
    missing = {e.partition for e in data.asset_events if isinstance(e, AssetCheckEvaluation)}
    # Two deadlines a region in a two-day window (the window may slide during the tick).
    assert before & after <= missing <= before | after
    assert len(missing) == 2 * len(REGIONS)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert not any(str(k).startswith(today) for k in missing)
