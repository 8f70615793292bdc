"""Headless backfill: run the pipeline for a date range on a Dagster instance, and report.

Runs are executed in this process, one after the other, so the whole backfill shares one
SparkSession. A failed range run is split into one run per partition, so a broken drop fails only
its own partition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from dagster import DagsterInstance, Definitions

from regional_etl.contract import REGIONS, validate_date, validate_region
from regional_etl.io.landing import DropNotReadyError, ready_drop
from regional_etl.partitions import DateRegion

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
BACKFILL_TAG = "regional_etl/backfill"
# The run logs stay complete on the instance (and in the UI); the terminal gets the progress.
CONSOLE_WARNINGS_ONLY = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

Status = Literal["succeeded", "failed", "not_ready"]


@dataclass
class PartitionOutcome:
    partition: str
    status: Status
    detail: str = ""
    run_id: str = ""


@dataclass
class BackfillReport:
    backfill_id: str
    outcomes: dict[str, PartitionOutcome] = field(default_factory=dict)
    runs: list[tuple[str, str, bool]] = field(default_factory=list)  # (job, run_id, success)

    @property
    def ok(self) -> bool:
        return all(o.status == "succeeded" for o in self.outcomes.values()) and all(
            s for _, _, s in self.runs
        )

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == status)


def date_range(start: str, end: str) -> list[str]:
    first, last = (
        dt.date.fromisoformat(validate_date(start)),
        dt.date.fromisoformat(validate_date(end)),
    )
    if last < first:
        raise ValueError(f"--end {end} is before --start {start}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _range_tags(first: str, last: str, backfill_id: str) -> dict[str, str]:
    return {RANGE_START: first, RANGE_END: last, BACKFILL_TAG: backfill_id}


def run_backfill(
    defs: Definitions,
    instance: DagsterInstance,
    start: str,
    end: str,
    regions: Sequence[str] = REGIONS,
    landing_root: str | None = None,
    progress: Callable[[str], None] = print,
) -> BackfillReport:
    """Materialize fx_rates, bronze, silver and gold for the range; never raises on run failure."""
    from regional_etl.resources.warehouse import WarehouseResource

    regions = [validate_region(r) for r in regions]
    dates = date_range(start, end)
    backfill_id = f"cli-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{start}-{end}"
    report = BackfillReport(backfill_id)
    if landing_root is None:
        warehouse = (defs.resources or {}).get("warehouse")
        if not isinstance(warehouse, WarehouseResource):
            raise ValueError("no landing_root given, and defs has no WarehouseResource 'warehouse'")
        # Resolves EnvVar fields, as a run would: outside a run they are still unresolved.
        landing_root = str(warehouse.process_config_and_initialize().landing())
    partitions = [DateRegion(d, r) for d in dates for r in regions]
    total = len(partitions)
    ready: list[DateRegion] = []
    for p in partitions:
        try:
            ready_drop(landing_root, p)
            ready.append(p)
        except DropNotReadyError as exc:
            report.outcomes[str(p)] = PartitionOutcome(str(p), "not_ready", str(exc))

    def done() -> str:
        return f"[{len(report.outcomes)}/{total} partitions]"

    def execute(job_name: str, tags: dict[str, str]) -> tuple[bool, str]:
        job = defs.resolve_job_def(job_name)
        result = job.execute_in_process(
            run_config=CONSOLE_WARNINGS_ONLY, instance=instance, tags=tags, raise_on_error=False
        )
        report.runs.append((job_name, result.run_id, result.success))
        return result.success, result.run_id

    ready_dates = sorted({p.order_date for p in ready})
    if ready_dates:
        ok, run_id = execute(
            "fx_rates_job", _range_tags(ready_dates[0], ready_dates[-1], backfill_id)
        )
        progress(f"fx_rates {ready_dates[0]}..{ready_dates[-1]}: {'ok' if ok else 'FAILED'}")
        if not ok:
            for p in ready:
                report.outcomes[str(p)] = PartitionOutcome(
                    str(p), "failed", "fx_rates failed for the range", run_id
                )
            ready = []

    for region in regions:
        for chunk in _contiguous([p for p in ready if p.region == region]):
            first, last = str(chunk[0]), str(chunk[-1])
            ok, run_id = execute("regional_orders_job", _range_tags(first, last, backfill_id))
            if ok:
                for p in chunk:
                    report.outcomes[str(p)] = PartitionOutcome(str(p), "succeeded", "", run_id)
            elif len(chunk) == 1:
                report.outcomes[first] = PartitionOutcome(first, "failed", "run failed", run_id)
            else:
                progress(f"{region} {first}..{last} failed: retrying partition by partition")
                for p in chunk:
                    ok, run_id = execute(
                        "regional_orders_job", _range_tags(str(p), str(p), backfill_id)
                    )
                    report.outcomes[str(p)] = PartitionOutcome(
                        str(p), "succeeded" if ok else "failed", "", run_id
                    )
            progress(f"{region} {chunk[0].order_date}..{chunk[-1].order_date} {done()}")

    # daily_revenue itself refuses the dates with a region missing from silver/orders.
    updated = sorted({p.order_date for p in ready if report.outcomes[str(p)].status == "succeeded"})
    for chunk in _contiguous_dates(updated):
        ok, run_id = execute("daily_revenue_job", _range_tags(chunk[0], chunk[-1], backfill_id))
        progress(f"daily_revenue {chunk[0]}..{chunk[-1]}: {'ok' if ok else 'FAILED'}")
    return report


def _contiguous(partitions: list[DateRegion]) -> list[list[DateRegion]]:
    """Split one region's partitions into runs of consecutive dates (a range run needs them)."""
    chunks: list[list[DateRegion]] = []
    for p in sorted(partitions):
        day = dt.date.fromisoformat(p.order_date)
        if chunks and dt.date.fromisoformat(chunks[-1][-1].order_date) + dt.timedelta(1) == day:
            chunks[-1].append(p)
        else:
            chunks.append([p])
    return chunks


def _contiguous_dates(dates: list[str]) -> list[list[str]]:
    return [
        [p.order_date for p in chunk]
        for chunk in _contiguous([DateRegion(d, REGIONS[0]) for d in dates])
    ]


def format_report(report: BackfillReport) -> str:
    lines = [f"backfill {report.backfill_id}", f"{'partition':<22} {'status':<10} detail"]
    for key in sorted(report.outcomes):
        o = report.outcomes[key]
        lines.append(f"{key:<22} {o.status:<10} {o.detail[:100]}")
    counts = ", ".join(
        f"{report.count(s)} {s}" for s in ("succeeded", "failed", "not_ready") if report.count(s)
    )
    lines.append(f"{len(report.outcomes)} partitions: {counts}")
    failed_runs = [f"{job} {run_id}" for job, run_id, ok in report.runs if not ok]
    if failed_runs:
        lines.append("failed runs: " + "; ".join(failed_runs))
    return "\n".join(lines)
