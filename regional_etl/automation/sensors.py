"""The landing sensor: new and re-delivered drops, for any date, in any order."""

from __future__ import annotations

import json

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from regional_etl import settings
from regional_etl.io.landing import Drop, scan_drops
from regional_etl.jobs import fx_rates_job, regional_orders_job
from regional_etl.resources.warehouse import WarehouseResource

# A bounded batch per tick keeps one evaluation short after a large historical redelivery; the
# cursor only moves past what was requested, so the rest comes on the next ticks.
MAX_REQUESTS_PER_TICK = 100


def _load_cursor(raw: str | None) -> dict[str, int]:
    return json.loads(raw) if raw else {}


@sensor(
    jobs=[regional_orders_job, fx_rates_job],
    minimum_interval_seconds=settings.positive_int(settings.SENSOR_INTERVAL_SECONDS),
    default_status=DefaultSensorStatus.RUNNING,
    description="Launches the regional run of every landing drop whose _SUCCESS marker is new or "
    "newer than last seen (weeks-old and out-of-order dates included). A date without FX rates "
    "gets its FX run first and its drops on a later tick. Drops without _SUCCESS wait.",
)
def landing_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource):
    # The cursor maps partition key -> the _SUCCESS mtime (ns) last launched: it survives
    # restarts, and a re-touched marker (redelivery) is newer than what it holds.
    seen = _load_cursor(context.cursor)
    scan = scan_drops(warehouse.landing())
    for path, problem in scan.problems:
        context.log.warning(f"ignoring landing folder {path}: {problem}")
    fresh = [d for d in scan.drops if d.success_mtime_ns > seen.get(str(d.partition), -1)]
    if not fresh:
        return SkipReason(f"no new or re-delivered drops under {warehouse.landing()}")

    fresh.sort(key=lambda d: (d.success_mtime_ns, d.partition))
    batch, later = fresh[:MAX_REQUESTS_PER_TICK], fresh[MAX_REQUESTS_PER_TICK:]
    next_tick = f"; {len(later)} more drops wait for the next tick" if later else ""
    # A drop ingested after its marker was last touched (by a backfill, the schedule or a click
    # in the UI) is not new: a sensor starting on an existing instance must not redo history.
    done = [d for d in batch if ingested_after(context.instance, d)]
    for drop in done:
        seen[str(drop.partition)] = drop.success_mtime_ns
    batch = [d for d in batch if d not in done]
    if not batch:
        return SensorResult(
            skip_reason=f"{len(done)} drops were already ingested after their _SUCCESS" + next_tick,
            cursor=json.dumps(seen, sort_keys=True),
        )
    have_fx = context.instance.get_materialized_partitions(AssetKey("fx_rates"))
    requests: list[RunRequest] = []
    for date in sorted({d.partition.order_date for d in batch} - have_fx):
        # The run key makes a second request for the same date a no-op while it exists.
        requests.append(
            RunRequest(run_key=f"fx_rates:{date}", job_name=fx_rates_job.name, partition_key=date)
        )
    waiting = 0
    for drop in batch:
        if drop.partition.order_date not in have_fx:
            # Launch the region once its date has rates; the cursor stays put so a later tick
            # picks it up, instead of racing the FX run and relying on step retries.
            waiting += 1
            continue
        key = str(drop.partition)
        requests.append(
            RunRequest(
                run_key=f"{key}@{drop.success_mtime_ns}",
                job_name=regional_orders_job.name,
                partition_key=key,
                tags={"regional_etl/trigger": "landing_sensor"},
            )
        )
        seen[key] = drop.success_mtime_ns
    if waiting:
        context.log.info(f"{waiting} drops wait for the FX rates of their date")
    if later:
        # Beyond this tick's batch: the ones already ingested in it do not wait for anything.
        context.log.info(next_tick.removeprefix("; "))
    return SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


def ingested_after(instance: DagsterInstance, drop: Drop) -> bool:
    """Whether `raw_orders` of the drop's partition was materialized after its _SUCCESS."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=AssetKey("raw_orders"), asset_partitions=[str(drop.partition)]
        ),
        limit=1,
    ).records
    return bool(records) and records[0].timestamp * 1e9 > drop.success_mtime_ns


automation_sensor = AutomationConditionSensorDefinition(
    "regional_automation",
    target=AssetSelection.assets("daily_revenue"),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=settings.positive_int(settings.SENSOR_INTERVAL_SECONDS),
    description="Brings daily_revenue up to date for every date whose regions were re-processed "
    "and passed their blocking gates.",
)

SENSORS = [landing_sensor, automation_sensor]
