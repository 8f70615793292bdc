"""`regional-etl backfill`: one asset backfill of every asset over the ready drops of a date
range, reported per (date, region); the same backfill as the UI's "Materialize all".

With a Dagster daemon running on the instance, it is Dagster's own asset backfill
(`backfill.daemon`): submitted with the mutation the UI sends, executed by the daemon, listed on
the UI's Backfills page. Without one, this process executes the same runs with public APIs
(`backfill.in_process`): no row on the Backfills page then, the runs tagged as a backfill's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterInstance, Definitions

from regional_etl.backfill import daemon, in_process
from regional_etl.backfill.daemon import LAUNCH, STATUS, TERMINAL, daemon_running
from regional_etl.backfill.report import (
    BACKFILL_ID_TAG,
    REPORT_WIDTH,
    BackfillReport,
    PartitionOutcome,
    Progress,
    Status,
    collect_report,
    format_report,
)
from regional_etl.contract import REGIONS, validate_region
from regional_etl.io.landing import DropNotReadyError, ready_drop
from regional_etl.partitions import DateRegion, daily_partitions, date_range, date_region_partitions

__all__ = [
    "BACKFILL_ID_TAG",
    "LAUNCH",
    "REPORT_WIDTH",
    "STATUS",
    "TERMINAL",
    "BackfillReport",
    "PartitionOutcome",
    "Progress",
    "Status",
    "backfill_params",
    "backfill_targets",
    "daemon_running",
    "format_report",
    "orders_key",
    "run_backfill",
]

POLL_SECONDS = 1.0


def run_backfill(
    defs: Definitions,
    instance: DagsterInstance,
    start: str,
    end: str,
    regions: Sequence[str] = REGIONS,
    landing_root: str | None = None,
    progress: Callable[[Progress], None] = lambda _: None,
    webserver: str | None = None,
) -> BackfillReport:
    """Back-fill every asset over the dates and regions whose drops are ready, as an asset
    backfill on `instance`; wait for it and report per (date, region). Never raises on a failed
    partition: the report says which failed and why. A drop that is not ready is pending, not
    failed: its partition is not launched, and gold of its date is held back (not launched
    either) until a later backfill of that drop, since it needs every region of the date.
    `webserver`: the base URL of the webserver that serves `instance`, if one does: a daemon's
    backfill is then submitted to it."""
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
    targets = backfill_targets(defs, ready, held_back=set(held_back))
    run_log = ""
    if daemon_running(instance):
        executed_by = "the daemon"
        title = f"regional-etl backfill {start}..{end}"
        with daemon.graphql_api(defs, instance, webserver) as graphql:
            backfill_id = daemon.launch(graphql, daemon.params(targets, title))
            while (state := daemon.progress(graphql, backfill_id, orders)).status not in TERMINAL:
                progress(state)
                time.sleep(POLL_SECONDS)
    else:
        executed_by = "this process (no daemon running)"
        backfill_id = in_process.new_backfill_id()
        log = _run_log(instance, backfill_id)
        state = in_process.execute(defs, instance, backfill_id, targets, orders, log, progress)
        run_log = str(log)
    progress(state)
    report = collect_report(instance, backfill_id, ready, orders)
    report.run_log = run_log
    report.status = state.status
    report.executed_by = executed_by
    report.outcomes.update(not_ready)
    report.held_back = held_back
    return report


def _run_log(instance: DagsterInstance, backfill_id: str) -> Path:
    folder = Path(instance.root_directory) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"backfill-{backfill_id}.log"


def _landing_root(defs: Definitions) -> str:
    from regional_etl.resources.warehouse import WarehouseResource

    warehouse = (defs.resources or {}).get("warehouse")
    if not isinstance(warehouse, WarehouseResource):
        raise ValueError("no landing_root given, and defs has no WarehouseResource 'warehouse'")
    # Resolves EnvVar fields as a run would: outside a run they are still unresolved.
    return str(warehouse.process_config_and_initialize().landing())


def backfill_targets(
    defs: Definitions, ready: Sequence[DateRegion], held_back: Collection[str] = ()
) -> dict[AssetKey, list[str]]:
    """The partitions of each asset of `defs` that a backfill of the `ready` drops targets: the
    (date, region) assets over the ready drops, the daily ones over the dates that have one
    (what "Materialize all" selects), except that the daily assets built from regions
    (daily_revenue) leave out the `held_back` dates, whose run could only fail on a region that
    is not there yet."""
    specs = [s for s in defs.resolve_all_asset_specs() if s.partitions_def is not None]
    regional = {s.key for s in specs if s.partitions_def == date_region_partitions}
    dates = sorted({p.order_date for p in ready})
    targets = {}
    for spec in specs:  # those without partitions are not the pipeline's history (release diff)
        if spec.partitions_def == date_region_partitions:
            keys = [str(p) for p in ready]
        elif spec.partitions_def == daily_partitions:
            from_regions = any(dep.asset_key in regional for dep in spec.deps)
            keys = [d for d in dates if not (from_regions and d in held_back)]
        else:
            raise ValueError(f"{spec.key.to_user_string()}: not partitioned by date or date|region")
        if keys:
            targets[spec.key] = keys
    return targets


def backfill_params(
    defs: Definitions, ready: Sequence[DateRegion], title: str, held_back: Collection[str] = ()
) -> dict[str, Any]:
    """The `LaunchBackfillParams` of `backfill_targets`, as the UI's "Materialize all" sends
    them."""
    return daemon.params(backfill_targets(defs, ready, held_back), title)


def orders_key(defs: Definitions) -> AssetKey:
    """The `orders` asset of `defs` (the release location prefixes it: release/orders), whose
    partitions the progress and the report count."""
    keys = [s.key for s in defs.resolve_all_asset_specs() if s.key.path[-1] == "orders"]
    if len(keys) != 1:
        raise ValueError(f"expected one 'orders' asset, found {keys}")
    return keys[0]
