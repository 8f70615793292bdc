"""Promotion and rollback: the checks a switch must pass, and the switch itself.

Every check of a promotion runs under the release lock, right before the pointer moves: among
them that readers switch to a namespace holding, for every table and partition, the release's
rebuild or exactly the live data (`moves`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from regional_etl.contract import REGIONS
from regional_etl.release.commits import table_versions
from regional_etl.release.moves import live_moves
from regional_etl.release.pointer import (
    Pointer,
    ReleaseRefused,
    pointer_lock,
    switch_entry,
    write_pointer,
)
from regional_etl.release.report import ReleaseThresholds, read_report, report_path
from regional_etl.release.seeding import read_seed
from regional_etl.resources.warehouse import BLUE, WarehouseResource

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from pyspark.sql import SparkSession

# AssetCheckPartitionInfo.latest_execution_status of a passed check, compared by value: its
# enum lives in a private Dagster module.
PASSED = "SUCCEEDED"


def gate_failures(instance: DagsterInstance, namespace: str, dates: list[str]) -> list[str]:
    """Every blocking gate of the namespace's assets over `dates` whose latest result on the
    instance is not a pass (failed, or never evaluated: a partition that was not built)."""
    from dagster import AssetCheckKey, AssetKey

    from regional_etl.checks import ORDERS_GATES, REVENUE_GATES

    prefix = [] if namespace == BLUE else [namespace]
    scope = [
        ("orders", ORDERS_GATES, [f"{d}|{r}" for d in dates for r in REGIONS]),
        ("daily_revenue", REVENUE_GATES, list(dates)),
    ]
    # One line per gate and outcome: a 30-day range has hundreds of gate results.
    failed: dict[tuple[str, str], list[str]] = {}
    for asset, gates, partitions in scope:
        keys = [AssetCheckKey(AssetKey([*prefix, asset]), g.name) for g in gates.values()]
        keys = [k for k, g in zip(keys, gates.values(), strict=True) if g.blocking]
        infos = instance.event_log_storage.get_asset_check_partition_info(
            keys, partition_keys=partitions
        )
        status = {(i.check_key, i.partition_key): i.latest_execution_status for i in infos}
        for key in keys:
            for p in partitions:
                s = status.get((key, p))
                if s is None or s.value != PASSED:
                    what = s.value.lower() if s else "never evaluated"
                    failed.setdefault((key.to_user_string(), what), []).append(p)
    return [
        f"gate {key} {what}: {', '.join(ps[:5])}"
        + (f" and {len(ps) - 5} more partitions" if len(ps) > 5 else "")
        for (key, what), ps in failed.items()
    ]


def promote(
    spark: SparkSession,
    warehouse: WarehouseResource,
    thresholds: ReleaseThresholds,
    instance: DagsterInstance,
    run_id: str,
    job: str,
    user: str | None = None,
) -> dict[str, Any]:
    """Make this location's namespace live, if its latest diff still describes it, its gates
    passed, the diff is within the thresholds and no live data would be hidden by it; returns
    the pointer's history entry."""
    candidate = warehouse.namespace
    what = f"promotion of {candidate}"
    with pointer_lock(warehouse) as pointer:
        if candidate == pointer.live:
            raise ReleaseRefused(what, [f"{candidate} is already live"])
        diff = read_report(warehouse, candidate)
        if diff is None:
            raise ReleaseRefused(what, ["no diff yet: materialize release_diff first"])
        reasons = []
        if diff.live != pointer.live:
            reasons.append(
                f"the diff compared against {diff.live}, but {pointer.live} is live now: "
                "materialize release_diff again"
            )
        now = table_versions(spark, warehouse, candidate)
        if now != diff.versions:
            moved = sorted(t for t in now if now[t] != diff.versions.get(t))
            reasons.append(
                f"{candidate} tables changed since the diff ({', '.join(moved)}): "
                "materialize release_diff again"
            )
        seed = read_seed(warehouse, candidate)
        if diff.live == pointer.live:
            reasons += live_moves(warehouse, seed, diff)
        reasons += gate_failures(instance, candidate, diff.dates)
        reasons += thresholds.violations(diff)
        if reasons:
            raise ReleaseRefused(what, reasons)
        entry = switch_entry("promote", pointer.live, candidate, run_id, job, user)
        entry.update(
            dates=[diff.dates[0], diff.dates[-1]],
            report=str(report_path(warehouse, candidate)),
            diff_run=diff.run_id,
            seed_run=seed.run_id if seed else None,
            thresholds=asdict(thresholds),
            live_versions=diff.live_versions,
        )
        write_pointer(warehouse, Pointer(candidate, pointer.live, [*pointer.history, entry]))
    return entry


def rollback(
    warehouse: WarehouseResource, run_id: str, job: str, user: str | None = None
) -> dict[str, Any]:
    """Point readers back at the namespace that was live before the last promotion."""
    with pointer_lock(warehouse) as pointer:
        last = pointer.history[-1] if pointer.history else None
        if last is None or last["action"] != "promote" or pointer.previous is None:
            raise ReleaseRefused(
                "rollback",
                [f"no promotion to undo ({pointer.live} is live since the start)"]
                if last is None
                else ["the last switch was a rollback already: promote to move forward again"],
            )
        entry = switch_entry("rollback", pointer.live, pointer.previous, run_id, job, user)
        write_pointer(warehouse, Pointer(pointer.previous, pointer.live, [*pointer.history, entry]))
    return entry
