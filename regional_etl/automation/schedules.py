"""The daily schedules: yesterday's partitions, in the partitions' own time zone."""

import datetime as dt
import zoneinfo

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SkipReason,
    build_schedule_from_partitioned_job,
    schedule,
)

from regional_etl.automation.sensors import ingested_after
from regional_etl.contract import REGIONS
from regional_etl.io.landing import Drop, DropNotReadyError, ready_drop
from regional_etl.jobs import fx_rates_job, regional_orders_job
from regional_etl.partitions import DateRegion, daily_partitions
from regional_etl.resources.warehouse import WarehouseResource

_ACTIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]

# FX first (the ECB publishes around 16:00 CET, so yesterday's rate exists at midnight), then
# the four regions of yesterday; daily_revenue follows through its automation condition.
fx_rates_schedule = build_schedule_from_partitioned_job(
    fx_rates_job,
    name="fx_rates_daily",
    hour_of_day=0,
    minute_of_hour=15,
    default_status=DefaultScheduleStatus.RUNNING,
)


@schedule(
    cron_schedule="0 1 * * *",
    job=regional_orders_job,
    name="regional_orders_daily",
    execution_timezone=daily_partitions.timezone,
    default_status=DefaultScheduleStatus.RUNNING,
    description="At 01:00, launches yesterday's (date, region) drops that have landed "
    "(_SUCCESS written) and that no run has ingested or is ingesting yet. A drop not in yet is "
    "not failed: the landing sensor launches it when it lands, and delivered_by_deadline "
    "fails only past its delivery deadline.",
)
def regional_orders_schedule(context: ScheduleEvaluationContext, warehouse: WarehouseResource):
    """Yesterday's ready drops, one run each; the rest wait for the landing sensor."""
    tz = zoneinfo.ZoneInfo(daily_partitions.timezone or "UTC")
    scheduled = context.scheduled_execution_time or dt.datetime.now(tz)
    day = (scheduled.astimezone(tz).date() - dt.timedelta(days=1)).isoformat()
    if not daily_partitions.has_partition_key(day):
        return SkipReason(f"{day} is before the first daily partition")
    requests: list[RunRequest] = []
    waiting: list[str] = []
    handled: list[str] = []
    for region in REGIONS:
        partition = DateRegion(day, region)
        try:
            drop = ready_drop(warehouse.landing(), partition)
        except DropNotReadyError:
            waiting.append(region)
            continue
        if _handled(context.instance, drop):
            handled.append(region)
            continue
        requests.append(
            RunRequest(
                run_key=f"{partition}@{drop.success_mtime_ns}",
                partition_key=str(partition),
                tags={"regional_etl/trigger": "regional_orders_daily"},
            )
        )
    told = []
    if handled:
        told.append(f"already ingested or running: {', '.join(handled)}")
    if waiting:
        told.append(
            f"not landed yet, left to the landing sensor: {', '.join(waiting)} (pending until "
            "their delivery deadline)"
        )
    if not requests:
        return SkipReason(f"{day}: nothing to launch; " + "; ".join(told))
    if told:
        context.log.info(f"{day}: " + "; ".join(told))
    return requests


def _handled(instance: DagsterInstance, drop: Drop) -> bool:
    """Ingested since its _SUCCESS (by the landing sensor, most days), or a run of it is on."""
    if ingested_after(instance, drop):
        return True
    active = instance.get_runs(
        RunsFilter(
            job_name=regional_orders_job.name,
            statuses=_ACTIVE,
            tags={"dagster/partition": str(drop.partition)},
        ),
        limit=1,
    )
    return bool(active)


SCHEDULES = [fx_rates_schedule, regional_orders_schedule]
