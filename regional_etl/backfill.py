"""Backfills have one mechanism, Dagster's asset backfill: the UI's "Materialize all" over a date
range and `regional-etl backfill` create the same thing, it shows on the UI's Backfills page,
and the same backfill logic decides its runs.

`run_backfill` submits the backfill with the GraphQL mutation the UI sends
(`launchPartitionBackfill`). If a Dagster daemon is running on the instance, the daemon executes
it and this module only follows it; otherwise this process drives it with the daemon's own
backfill iteration and executes its runs in-process, one after the other.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunsFilter,
)

from regional_etl.contract import REGIONS, validate_region
from regional_etl.io.landing import DropNotReadyError, ready_drop
from regional_etl.partitions import (
    DateRegion,
    daily_partitions,
    date_range,
    date_region_partitions,
)

BACKFILL_ID_TAG = "dagster/backfill"
LOCATION_NAME = "regional_etl"  # workspace.yaml's name: runs link to the same location in the UI
# A daemon whose backfill loop has not reported for this long is taken as gone.
DAEMON_HEARTBEAT_SECONDS = 60.0
POLL_SECONDS = 1.0

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""

STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted
            numPartitionsInProgress
            numPartitionsMaterialized
            numPartitionsFailed
          }
        }
      }
    }
    ... on Error { message }
  }
}"""

ORDERS = AssetKey("orders")
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


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


def run_backfill(
    defs: Definitions,
    instance: DagsterInstance,
    start: str,
    end: str,
    regions: Sequence[str] = REGIONS,
    landing_root: str | None = None,
    progress: Callable[[Progress], None] = lambda _: None,
) -> BackfillReport:
    """Back-fill every asset over the dates and regions whose drops are ready, as an asset
    backfill on `instance`; wait for it and report per (date, region). Never raises on a failed
    partition: the report says which failed and why. A drop that is not ready is pending, not
    failed: its partition is not launched, and gold of its date is held back (not launched
    either) until a later backfill of that drop, since it needs every region of the date."""
    regions = [validate_region(r) for r in regions]
    root = landing_root or _landing_root(defs)
    ready: list[DateRegion] = []
    not_ready: dict[str, PartitionOutcome] = {}
    held_back: dict[str, str] = {}
    for date in date_range(start, end):
        # Gold of a date needs all its regions, the ones outside `regions` included.
        waits: list[str] = []
        for region in REGIONS:
            p = DateRegion(date, region)
            try:
                ready_drop(root, p)
                if region in regions:
                    ready.append(p)
            except DropNotReadyError as exc:
                waits.append(f"{region} ({exc})")
                if region in regions:
                    not_ready[str(p)] = PartitionOutcome(str(p), Status.NOT_READY, str(exc))
        if waits:
            held_back[date] = "waits for " + "; ".join(waits)
    if not ready:
        return BackfillReport("", "NOTHING_TO_DO", outcomes=not_ready, held_back=held_back)

    orders = orders_key(defs)
    daemon = daemon_running(instance)
    with _workspace(defs, instance, in_process=not daemon) as workspace:
        title = f"regional-etl backfill {start}..{end}"
        backfill_id = _launch(workspace, defs, ready, title, held_back=set(held_back))
        run_log = None if daemon else _run_log(instance, backfill_id)
        while (state := _progress(workspace, backfill_id, orders)).status not in TERMINAL:
            progress(state)
            if run_log is None:  # the daemon executes it
                time.sleep(POLL_SECONDS)
                continue
            # The runs executing here print what a daemon's runs print to their own processes:
            # their event log (also on the instance, the UI's run page) and library warnings.
            # The terminal keeps the progress bar and the summary; the rest goes to a file.
            with open(run_log, "a") as log, redirect_stdout(log), redirect_stderr(log):
                _iterate(workspace, backfill_id)
        progress(state)
    report = _report(instance, backfill_id, ready, orders)
    report.run_log = str(run_log or "")
    report.status = state.status
    report.executed_by = "the daemon" if daemon else "this process (no daemon running)"
    report.outcomes.update(not_ready)
    report.held_back = held_back
    return report


def _run_log(instance: DagsterInstance, backfill_id: str) -> Path:
    folder = Path(instance.root_directory) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"backfill-{backfill_id}.log"


def daemon_running(instance: DagsterInstance) -> bool:
    """True when a `dagster-daemon` (alone or under `dagster dev`) runs backfills on this
    instance: then it executes the backfill, as it would one launched from the UI."""
    heartbeat = instance.get_daemon_heartbeats().get("BACKFILL")
    return heartbeat is not None and time.time() - heartbeat.timestamp < DAEMON_HEARTBEAT_SECONDS


def _landing_root(defs: Definitions) -> str:
    from regional_etl.resources.warehouse import WarehouseResource

    warehouse = (defs.resources or {}).get("warehouse")
    if not isinstance(warehouse, WarehouseResource):
        raise ValueError("no landing_root given, and defs has no WarehouseResource 'warehouse'")
    # Resolves EnvVar fields as a run would: outside a run they are still unresolved.
    return str(warehouse.process_config_and_initialize().landing())


# The code location served in-process: the Definitions given to `run_backfill` (tests give
# their own resources), found by the in-process location and by each run through this name.
served: Definitions | None = None


@contextmanager
def _workspace(defs: Definitions, instance: DagsterInstance, in_process: bool) -> Iterator[Any]:
    """A workspace over `defs`. Dagster has no public API to submit or execute an asset backfill
    without a webserver and a daemon: this function and `_iterate` are the only places that use
    its internals (test_backfill.py fails loudly if they move)."""
    global served
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._serdes import ConfigurableClassData

    served = defs
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name=__name__, attribute="served"),
        location_name=LOCATION_NAME,
    )
    target = InProcessWorkspaceLoadTarget(origin)
    if not in_process:
        with WorkspaceProcessContext(instance, target) as context:
            yield context
        return
    # The same storage, but a run launched by the backfill executes here and now instead of
    # waiting in the queue for a daemon that is not running.
    ref = instance.get_ref()._replace(
        run_launcher_data=ConfigurableClassData(
            "dagster._core.launcher.sync_in_memory_run_launcher", "SyncInMemoryRunLauncher", "{}"
        ),
        run_coordinator_data=ConfigurableClassData(
            "dagster._core.run_coordinator", "DefaultRunCoordinator", "{}"
        ),
    )
    with (
        DagsterInstance.from_ref(ref) as driver,
        WorkspaceProcessContext(driver, target) as context,
    ):
        yield context


def _iterate(workspace: Any, backfill_id: str) -> None:
    """One iteration of the daemon's backfill loop, for this backfill only."""
    import logging

    from dagster._daemon.backfill import execute_backfill_jobs

    backfill = workspace.instance.get_backfill(backfill_id)
    for error in execute_backfill_jobs(workspace, logging.getLogger(__name__), [backfill]):
        if error is not None:
            raise RuntimeError(f"backfill {backfill_id}: {error.to_string()}")


def _graphql(workspace: Any, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    from dagster_graphql.cli import execute_query

    result = execute_query(workspace, query, variables)
    data = result.get("data")
    if result.get("errors") or data is None:
        raise RuntimeError(f"GraphQL: {result.get('errors')}")
    return data


def backfill_params(
    defs: Definitions,
    ready: Sequence[DateRegion],
    title: str,
    held_back: Collection[str] = (),
) -> dict[str, Any]:
    """`LaunchBackfillParams` of every asset of `defs`: the (date, region) assets over the ready
    drops, the daily ones over the dates that have one (what "Materialize all" sends), except
    that the daily assets built from regions (daily_revenue) leave out the `held_back` dates,
    whose run could only fail on a region that is not there yet."""
    specs = [s for s in defs.resolve_all_asset_specs() if s.partitions_def is not None]
    regional = {s.key for s in specs if s.partitions_def == date_region_partitions}
    dates = sorted({p.order_date for p in ready})
    selectors = []
    for spec in specs:  # those without partitions are not the pipeline's history (release diff)
        if spec.partitions_def == date_region_partitions:
            keys = [str(p) for p in ready]
        elif spec.partitions_def == daily_partitions:
            from_regions = any(dep.asset_key in regional for dep in spec.deps)
            keys = [d for d in dates if not (from_regions and d in held_back)]
        else:
            raise ValueError(f"{spec.key.to_user_string()}: not partitioned by date or date|region")
        if not keys:
            continue
        selectors.append(
            {
                "assetKey": {"path": spec.key.path},
                "partitions": {"ranges": [{"start": k, "end": k} for k in keys]},
            }
        )
    return {"partitionsByAssets": selectors, "title": title}


def _launch(
    workspace: Any,
    defs: Definitions,
    ready: list[DateRegion],
    title: str,
    held_back: Collection[str] = (),
) -> str:
    params = backfill_params(defs, ready, title, held_back)
    launched = _graphql(workspace, LAUNCH, {"params": params})["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"the backfill was refused: {launched.get('message', launched)}")
    return launched["backfillId"]


def orders_key(defs: Definitions) -> AssetKey:
    """The `orders` asset of `defs` (a release location prefixes it: green/orders), whose
    partitions the progress and the report count."""
    keys = [s.key for s in defs.resolve_all_asset_specs() if s.key.path[-1] == "orders"]
    if len(keys) != 1:
        raise ValueError(f"expected one 'orders' asset, found {keys}")
    return keys[0]


def _progress(workspace: Any, backfill_id: str, orders: AssetKey = ORDERS) -> Progress:
    data = _graphql(workspace, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if data["__typename"] != "PartitionBackfill":
        raise RuntimeError(f"backfill {backfill_id}: {data.get('message', data)}")
    counts = {
        tuple(s["assetKey"]["path"]): s
        for s in data["assetBackfillData"]["assetBackfillStatuses"]
        if "assetKey" in s
    }
    counted = counts.get(tuple(orders.path), {})
    return Progress(
        data["status"],
        counted.get("numPartitionsMaterialized", 0),
        counted.get("numPartitionsFailed", 0),
        counted.get("numPartitionsTargeted", 0),
    )


def _report(
    instance: DagsterInstance, backfill_id: str, ready: list[DateRegion], orders: AssetKey
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
