"""Delivery deadlines: a (date, region) drop that has not landed and been ingested by its
deadline fails the `delivered_by_deadline` check of `raw_orders`, and one alert goes out.

Before its deadline a missing drop is *pending*: nothing fails and nobody is paged, however late
in the day it lands. Past it the drop is *missing*: `delivery_deadline_sensor` reports a failed
evaluation of the check on that partition (the UI's check page shows it among the partitions)
and posts one alert to the failure webhook. The cursor keeps what was alerted, so a restarted
daemon neither repeats nor forgets an alert. When the drop is ingested, the check runs in the
ingesting run after `raw_orders` and passes on that partition.
"""

import datetime as dt
import json
import zoneinfo
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    ConfigurableResource,
    DagsterInstance,
    DefaultSensorStatus,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    asset_check,
    sensor,
)
from pydantic import Field

from regional_etl import settings
from regional_etl.alerts import AlertDeliveryError, AlertWebhookResource
from regional_etl.contract import LANDING_SUFFIX, REGIONS, SUCCESS_MARKER, drop_path
from regional_etl.partitions import (
    DateRegion,
    daily_partitions,
    date_region_partitions,
    parse_date_region,
)
from regional_etl.resources.warehouse import WarehouseResource

RAW_ORDERS = AssetKey("raw_orders")
CHECK_NAME = "delivered_by_deadline"
CHECK_DESCRIPTION = (
    "The (date, region) drop landed and was ingested by its delivery deadline (by default 6 "
    "hours after the end of the day). Failed: the drop is missing past its deadline; the "
    "message names the region, date and expected landing path."
)


class DeliveryDeadlineResource(ConfigurableResource):
    """When each region's landing drop is due: hours after the end of its day, in the time zone
    of the daily partitions."""

    hours_after_day_end: float = Field(
        default=6.0,
        description="A drop is due this many hours after the end of its day (env "
        "REGIONAL_ETL_DELIVERY_DEADLINE_HOURS).",
    )
    region_hours: str | None = Field(
        default=None,
        description="Per-region exceptions, region=hours separated by commas, e.g. "
        "'ap-south=9' (env REGIONAL_ETL_DELIVERY_DEADLINE_HOURS_BY_REGION).",
    )
    lookback_days: int = Field(
        default=7,
        ge=1,
        description="The deadline sensor watches the dates whose deadline passed within this "
        "many days (env REGIONAL_ETL_DELIVERY_LOOKBACK_DAYS); older gaps are not alerted.",
    )

    def hours(self, region: str) -> float:
        """The hours after the end of the day that `region`'s drop is due."""
        return _region_hours(self.region_hours).get(region, self.hours_after_day_end)

    def deadline(self, partition: DateRegion) -> dt.datetime:
        """The deadline of one drop, in the partitions' time zone."""
        tz = zoneinfo.ZoneInfo(daily_partitions.timezone or "UTC")
        day = dt.date.fromisoformat(partition.order_date)
        end_of_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
        return end_of_day + dt.timedelta(hours=self.hours(partition.region))


def _region_hours(raw: str | None) -> dict[str, float]:
    hours: dict[str, float] = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        region, sep, value = item.partition("=")
        region = region.strip()
        try:
            if not sep or region not in REGIONS:
                raise ValueError
            hours[region] = float(value)
        except ValueError:
            raise ValueError(
                f"{settings.DELIVERY_DEADLINE_HOURS_BY_REGION.name}: {item.strip()!r} is not "
                f"<region>=<hours> with a region of {', '.join(REGIONS)}"
            ) from None
    return hours


def deadline_resources() -> dict[str, DeliveryDeadlineResource]:
    """The resource of the deadline check and sensor, from the environment."""
    return {
        "delivery_deadlines": DeliveryDeadlineResource(
            hours_after_day_end=settings.configured(settings.DELIVERY_DEADLINE_HOURS, float),
            region_hours=settings.configured(settings.DELIVERY_DEADLINE_HOURS_BY_REGION),
            lookback_days=settings.configured(settings.DELIVERY_LOOKBACK_DAYS, int),
        )
    }


class DropState(StrEnum):
    INGESTED = "ingested"
    PENDING = "pending"  # not ingested, before its deadline: nothing fails
    MISSING = "missing"  # not ingested, past its deadline: the check fails, one alert


@dataclass(frozen=True)
class DropStatus:
    """Where one (date, region) drop stands against its deadline."""

    partition: DateRegion
    state: DropState
    deadline: dt.datetime
    expected_path: Path
    found: str  # what is at the expected path

    @property
    def message(self) -> str:
        p = self.partition
        due = self.deadline.isoformat()
        if self.state == DropState.INGESTED:
            return f"region {p.region}, date {p.order_date}: drop ingested (due {due})"
        if self.state == DropState.PENDING:
            return (
                f"region {p.region}, date {p.order_date}: not delivered yet, pending until its "
                f"deadline {due} ({self.found})"
            )
        return (
            f"region {p.region}, date {p.order_date}: landing drop missing past its deadline "
            f"{due}: expected {self.expected_path}/*{LANDING_SUFFIX} and "
            f"{self.expected_path}/{SUCCESS_MARKER}; {self.found}"
        )

    def metadata(self) -> dict[str, Any]:
        return {
            "partition": str(self.partition),
            "region": self.partition.region,
            "date": self.partition.order_date,
            "state": self.state.value,
            "deadline": self.deadline.isoformat(),
            "expected_path": MetadataValue.path(str(self.expected_path)),
            "found": self.found,
        }


def drop_status(
    partition: DateRegion,
    landing_root: str | Path,
    deadline: dt.datetime,
    now: dt.datetime,
    ingested: bool,
) -> DropStatus:
    """The state of one drop at `now`: ingested, pending (before `deadline`) or missing."""
    path = drop_path(landing_root, partition.order_date, partition.region)
    marker = path / SUCCESS_MARKER
    if marker.is_file():
        landed = dt.datetime.fromtimestamp(marker.stat().st_mtime, dt.UTC).isoformat()
        found = (
            f"the drop landed ({SUCCESS_MARKER} at {landed}) but raw_orders has not ingested "
            "it: see the partition's runs"
        )
    elif path.is_dir():
        found = f"the folder exists but has no {SUCCESS_MARKER} marker yet"
    else:
        found = "the folder does not exist"
    if ingested:
        state = DropState.INGESTED
    elif now < deadline:
        state = DropState.PENDING
    else:
        state = DropState.MISSING
    return DropStatus(partition, state, deadline, path, found)


def due_partitions(
    deadlines: DeliveryDeadlineResource, now: dt.datetime
) -> list[tuple[DateRegion, dt.datetime]]:
    """The (date, region) partitions whose deadline passed within the lookback, oldest first."""
    latest_hours = max([deadlines.hours(r) for r in REGIONS])
    today = now.astimezone(zoneinfo.ZoneInfo(daily_partitions.timezone or "UTC")).date()
    first = today - dt.timedelta(days=deadlines.lookback_days + int(latest_hours // 24) + 2)
    since = now - dt.timedelta(days=deadlines.lookback_days)
    due = []
    day = first
    while day <= today:
        if daily_partitions.has_partition_key(day.isoformat()):
            for region in REGIONS:
                partition = DateRegion(day.isoformat(), region)
                deadline = deadlines.deadline(partition)
                if since < deadline <= now:
                    due.append((partition, deadline))
        day += dt.timedelta(days=1)
    return sorted(due, key=lambda item: (item[1], item[0]))


def _is_ingested(instance: DagsterInstance, partition: DateRegion) -> bool:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=RAW_ORDERS, asset_partitions=[str(partition)]), limit=1
    ).records
    return bool(records)


@asset_check(
    asset=RAW_ORDERS,
    name=CHECK_NAME,
    description=CHECK_DESCRIPTION,
    partitions_def=date_region_partitions,
    blocking=False,
)
def delivered_by_deadline(
    context: AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    delivery_deadlines: DeliveryDeadlineResource,
) -> AssetCheckResult:
    """Whether the drop of this (date, region) was ingested by its delivery deadline.

    Runs after `raw_orders` in every run that ingests a drop (where it passes: the drop is in),
    and on its own from the UI, where a drop not in yet is pending (a warning) before its
    deadline and missing (a failure) after it. `delivery_deadline_sensor` reports the failure of
    every drop missing past its deadline without a run.
    """
    run = context.op_execution_context
    if not run.has_partition_key:
        # A range run (backfill): this step runs only once raw_orders ingested every drop of it.
        return AssetCheckResult(
            passed=True,
            description=f"every drop of this range run was ingested ({len(run.partition_keys)})",
            metadata={"partitions": len(run.partition_keys)},
        )
    partition = parse_date_region(run.partition_key)
    status = drop_status(
        partition,
        warehouse.landing(),
        delivery_deadlines.deadline(partition),
        dt.datetime.now(dt.UTC),
        _is_ingested(context.instance, partition),
    )
    return AssetCheckResult(
        passed=status.state == DropState.INGESTED,
        severity=(
            AssetCheckSeverity.WARN
            if status.state == DropState.PENDING
            else AssetCheckSeverity.ERROR
        ),
        description=status.message,
        metadata=status.metadata(),
    )


def missing_evaluation(status: DropStatus) -> AssetCheckEvaluation:
    """The failed check result of a drop missing past its deadline, on its own partition."""
    return AssetCheckEvaluation(
        asset_key=RAW_ORDERS,
        check_name=CHECK_NAME,
        passed=False,
        partition=str(status.partition),
        severity=AssetCheckSeverity.ERROR,
        blocking=False,
        description=status.message,
        metadata={**status.metadata(), "message": status.message},
    )


def missing_payload(
    status: DropStatus, webhook: AlertWebhookResource, sensor_name: str
) -> dict[str, Any]:
    """The JSON alert for one drop missing past its deadline."""
    link = f"/assets/{RAW_ORDERS.to_user_string()}?view=checks"
    return {
        "event": "drop_missing",
        # One per drop: a receiver can drop a repeat (a daemon killed between POST and cursor).
        "alert_id": f"drop_missing:{status.partition}",
        "summary": status.message,
        "asset": RAW_ORDERS.to_user_string(),
        "check": CHECK_NAME,
        "partition": str(status.partition),
        "region": status.partition.region,
        "date": status.partition.order_date,
        "deadline": status.deadline.isoformat(),
        "expected_path": str(status.expected_path),
        "found": status.found,
        "link": link,
        "url": webhook.run_url(link),
        "sensor": sensor_name,
        "sent_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def evaluate_deadlines(
    context: SensorEvaluationContext,
    warehouse: WarehouseResource,
    alert_webhook: AlertWebhookResource,
    delivery_deadlines: DeliveryDeadlineResource,
    now: dt.datetime,
) -> SensorResult:
    """One tick of `delivery_deadline_sensor` at `now`: failed check results for the drops newly
    missing past their deadline, one alert each, and the cursor that remembers them.

    The cursor maps each missing partition to its deadline and whether its alert was delivered:
    an alert the webhook refused is tried again on the next tick, a delivered one never again.
    A partition leaves the cursor once ingested, or once its deadline is older than the lookback.
    """
    missing: dict[str, dict[str, Any]] = json.loads(context.cursor or "{}").get("missing", {})
    ingested = context.instance.get_materialized_partitions(RAW_ORDERS)
    landing = warehouse.landing()
    since = now - dt.timedelta(days=delivery_deadlines.lookback_days)

    for key in sorted(missing):
        if key in ingested:
            context.log.info(f"{key}: the late drop is ingested; {CHECK_NAME} passed in its run")
            del missing[key]
        elif dt.datetime.fromisoformat(missing[key]["deadline"]) <= since:
            context.log.warning(
                f"{key}: still missing, no longer watched ({delivery_deadlines.lookback_days} "
                "days past its deadline)"
            )
            del missing[key]

    events: list[AssetCheckEvaluation] = []
    for partition, deadline in due_partitions(delivery_deadlines, now):
        key = str(partition)
        if key in ingested or key in missing:
            continue
        status = drop_status(partition, landing, deadline, now, ingested=False)
        events.append(missing_evaluation(status))
        missing[key] = {"deadline": deadline.isoformat(), "alerted": False}

    alerted = 0
    for key, entry in sorted(missing.items()):
        if entry["alerted"]:
            continue
        partition = parse_date_region(key)
        deadline = dt.datetime.fromisoformat(entry["deadline"])
        status = drop_status(partition, landing, deadline, now, ingested=False)
        payload = missing_payload(status, alert_webhook, context.sensor_name)
        try:
            delivery = alert_webhook.send(payload, log=context.log)
        except AlertDeliveryError as exc:
            context.log.error(f"{key}: alert not delivered, tried again next tick: {exc}")
            continue
        entry["alerted"] = True
        alerted += 1
        if delivery is None:
            context.log.warning(
                f"Alert not sent ({settings.ALERT_WEBHOOK_URL.name} is unset): {status.message}"
            )
        else:
            context.log.info(
                f"Alert sent to {delivery.url} (HTTP {delivery.status}, {delivery.attempts} "
                f"attempt(s)): {status.message}"
            )
    cursor = json.dumps({"missing": missing}, sort_keys=True)
    if not events and not alerted:
        return SensorResult(
            skip_reason=f"no drop newly missing past its deadline ({len(missing)} still missing)",
            cursor=cursor,
        )
    return SensorResult(asset_events=events, cursor=cursor)


@sensor(
    name="delivery_deadline_sensor",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Fails raw_orders' delivered_by_deadline check on every (date, region) whose "
    "drop has not been ingested by its delivery deadline, and posts one alert per missing drop "
    "to REGIONAL_ETL_ALERT_WEBHOOK_URL (region, date, expected landing path). Before its "
    "deadline a missing drop is pending: no failure, no alert.",
)
def delivery_deadline_sensor(
    context: SensorEvaluationContext,
    warehouse: WarehouseResource,
    alert_webhook: AlertWebhookResource,
    delivery_deadlines: DeliveryDeadlineResource,
) -> SensorResult:
    """Deadline check results and alerts, evaluated at the time of the tick."""
    return evaluate_deadlines(
        context, warehouse, alert_webhook, delivery_deadlines, dt.datetime.now(dt.UTC)
    )


DEADLINE_CHECKS = [delivered_by_deadline]
DEADLINE_SENSORS = [delivery_deadline_sensor]
