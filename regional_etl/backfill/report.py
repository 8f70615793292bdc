"""What a backfill did, per (date, region) partition of `orders`, read from the instance: the
runs tagged with the backfill, their check results and errors; and the summary the CLI prints."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)

from regional_etl.partitions import DateRegion

# Every run of a backfill carries its id in this tag, whoever executes it.
BACKFILL_ID_TAG = "dagster/backfill"


class Status(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOT_READY = "not_ready"


@dataclass
class PartitionOutcome:
    partition: str
    status: Status
    detail: str = ""
    # WARN-severity checks that did not pass: said, but never a failure by themselves.
    warnings: list[str] = field(default_factory=list)


@dataclass
class Progress:
    """How far a backfill is, counted over (date, region) partitions of `orders`."""

    status: str
    done: int
    failed: int
    total: int


@dataclass
class BackfillReport:
    backfill_id: str
    status: str = ""
    executed_by: str = ""  # "the daemon" or "this process"
    outcomes: dict[str, PartitionOutcome] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    run_log: str = ""  # where the runs executed in-process wrote their output
    # Dates whose region-dependent daily assets (daily_revenue) were left out of the backfill
    # because a drop of the date is not ready: date -> "waits for <region> (<why>)".
    held_back: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """A targeted partition or a run failed."""
        return bool(self.failed_runs) or any(
            o.status == Status.FAILED for o in self.outcomes.values()
        )

    @property
    def pending(self) -> bool:
        """A drop is not ready yet, or gold of a date waits for one: not a failure."""
        return bool(self.held_back) or any(
            o.status == Status.NOT_READY for o in self.outcomes.values()
        )

    @property
    def ok(self) -> bool:
        """Everything targeted was published and nothing waits."""
        return not self.failed and not self.pending

    def count(self, status: Status | str) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == status)


def collect_report(
    instance: DagsterInstance, backfill_id: str, ready: Sequence[DateRegion], orders: AssetKey
) -> BackfillReport:
    """Per (date, region): published to silver/orders by this backfill, or why not."""
    runs = instance.get_runs(RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
    run_ids = {r.run_id for r in runs}
    keys = [str(p) for p in ready]
    published_filter = AssetRecordsFilter(asset_key=orders, asset_partitions=keys)
    records = instance.fetch_materializations(published_filter, limit=10 * len(keys)).records
    published = {r.partition_key for r in records if r.run_id in run_ids}
    report = BackfillReport(backfill_id, runs=[r.run_id for r in runs])
    errors: dict[str, set[str]] = {}
    warnings: dict[str, set[str]] = {}
    for run in runs:
        if run.status != DagsterRunStatus.SUCCESS:
            report.failed_runs.append(run.run_id)
        for event in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = event.dagster_event.asset_check_evaluation_data  # type: ignore[union-attr]
            if evaluation.passed or not evaluation.partition:
                continue
            found = errors if evaluation.severity == AssetCheckSeverity.ERROR else warnings
            found.setdefault(evaluation.partition, set()).add(
                f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            )
    run_failures = _run_failures(instance, report.failed_runs)
    for key in keys:
        warned = sorted(warnings.get(key, set()))
        if key in published:
            outcome = PartitionOutcome(key, Status.SUCCEEDED, warnings=warned)
        else:
            failed_checks = ", ".join(sorted(errors.get(key, set())))
            detail = f"failed checks: {failed_checks}" if failed_checks else run_failures
            outcome = PartitionOutcome(key, Status.FAILED, detail or "not run", warned)
        report.outcomes[key] = outcome
    return report


def _run_failures(instance: DagsterInstance, run_ids: list[str]) -> str:
    """The first line, whole, of each failed run's error, for partitions that no check
    explains."""
    messages = []
    for run_id in run_ids:
        for event in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
            error = event.dagster_event.step_failure_data.error  # type: ignore[union-attr]
            if error is not None:
                messages.append(error.message.strip().splitlines()[0])
    return "; ".join(dict.fromkeys(messages))


def format_report(report: BackfillReport) -> str:
    lines = [f"backfill {report.backfill_id} {report.status}".rstrip()]
    if report.executed_by:
        lines[0] += f", executed by {report.executed_by}"
    lines.append(f"{'partition':<22} {'status':<10} detail")
    for key in sorted(report.outcomes):
        o = report.outcomes[key]
        details = [o.detail] if o.detail else []
        if o.warnings:
            details.append("warnings: " + ", ".join(o.warnings))
        lines.extend(_wrapped(f"{key:<22} {o.status.value:<10} ", details))
    counts = ", ".join(f"{report.count(s)} {s.value}" for s in Status if report.count(s))
    lines.append(f"{len(report.outcomes)} partitions: {counts}")
    for date in sorted(report.held_back):
        lines.extend(_wrapped(f"held back: {date} ", [report.held_back[date]]))
    if report.failed_runs:
        lines.append("failed runs: " + " ".join(report.failed_runs))
    if report.run_log:
        lines.append(f"run logs: {report.run_log}")
    return "\n".join(lines)


REPORT_WIDTH = 100


def _wrapped(head: str, details: list[str]) -> list[str]:
    """`head` then each detail whole, wrapped at word boundaries under the detail column (a long
    path stays on one line rather than being cut)."""
    indent = " " * len(head)
    lines: list[str] = []
    for detail in details or [""]:
        lines.extend(
            textwrap.wrap(
                detail,
                REPORT_WIDTH,
                initial_indent=indent if lines else head,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
            or [head.rstrip()]
        )
    return lines
