"""Promotion and rollback: the checks a switch must pass, and the switch itself.

Every check of a promotion runs under the release lock, right before the pointer moves: among
them that readers switch to a namespace holding, for every table and partition, the release's
rebuild or exactly the live data (`moves`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from regional_etl.contract import REGIONS
from regional_etl.release.commits import (
    TABLES,
    CommitsGone,
    Partition,
    commits_after,
    describe,
    last_commit_ms,
    table_versions,
)
from regional_etl.release.moves import live_moves
from regional_etl.release.pointer import (
    Pointer,
    ReleaseRefused,
    pointer_lock,
    switch_entry,
    write_pointer,
)
from regional_etl.release.report import ReleaseThresholds, read_report, report_path
from regional_etl.release.seeding import Seed, read_seed
from regional_etl.resources.warehouse import WarehouseResource

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from pyspark.sql import SparkSession

# AssetCheckPartitionInfo.latest_execution_status of a passed check, compared by value: its
# enum lives in a private Dagster module.
PASSED = "SUCCEEDED"
# The release location's asset keys: release/orders, whichever slot it builds this time.
RELEASE_PREFIX = "release"


def gate_failures(
    instance: DagsterInstance, dates: list[str], seed: Seed | None = None
) -> list[str]:
    """Every blocking gate of the release location's assets over `dates` whose latest result
    on the instance is not a pass (failed, or never evaluated: a partition that was not built),
    or is from a run created before `seed` (a result of an earlier release in the other slot,
    under the same keys)."""
    from dagster import AssetCheckKey, AssetKey

    from regional_etl.checks import ORDERS_GATES, REVENUE_GATES

    prefix = [RELEASE_PREFIX]
    created: dict[str, dt.datetime | None] = {}

    def created_at(run_id: str | None) -> dt.datetime | None:
        if not run_id:  # a result reported without a run
            return None
        if run_id not in created:
            record = instance.get_run_record_by_id(run_id)
            created[run_id] = record.create_timestamp if record else None
        return created[run_id]

    # When the seed's run was created, to the microsecond (the seed's own second-resolution
    # time when it was not a Dagster run).
    started = seed and (created_at(seed.run_id) or dt.datetime.fromisoformat(seed.at))

    def before_seed(run_id: str | None) -> bool:
        when = created_at(run_id)
        return bool(started and when and when < started)

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
        latest = {(i.check_key, i.partition_key): i for i in infos}
        for key in keys:
            for p in partitions:
                info = latest.get((key, p))
                if info is None:
                    what = "never evaluated"
                elif before_seed(info.latest_planned_run_id):
                    what = "not evaluated since start_release"
                elif info.latest_execution_status.value != PASSED:
                    what = info.latest_execution_status.value.lower()
                else:
                    continue
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
    candidate = warehouse.slot
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
        reasons += gate_failures(instance, diff.dates, seed)
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
            # The candidate's versions as readers switch to it: what a rollback compares with.
            versions=diff.versions,
        )
        write_pointer(warehouse, Pointer(candidate, pointer.live, [*pointer.history, entry]))
    return entry


def rollback(
    warehouse: WarehouseResource, run_id: str, job: str, user: str | None = None
) -> dict[str, Any]:
    """Point readers back at the namespace that was live before the last promotion, unless
    that would hide what the live location wrote since (`hidden_by_rollback`)."""
    with pointer_lock(warehouse) as pointer:
        last = pointer.history[-1] if pointer.history else None
        if last is None or last["action"] != "promote" or pointer.previous is None:
            raise ReleaseRefused(
                "rollback",
                [f"no promotion to undo ({pointer.live} is live since the start)"]
                if last is None
                else ["the last switch was a rollback already: promote to move forward again"],
            )
        if reasons := hidden_by_rollback(warehouse, pointer.live, pointer.previous, last):
            raise ReleaseRefused("rollback", reasons)
        entry = switch_entry("rollback", pointer.live, pointer.previous, run_id, job, user)
        write_pointer(warehouse, Pointer(pointer.previous, pointer.live, [*pointer.history, entry]))
    return entry


def hidden_by_rollback(
    warehouse: WarehouseResource, live: str, previous: str, promotion: dict[str, Any]
) -> list[str]:
    """The partitions the live location committed to `live` since `promotion` switched readers
    to it that `previous` has not rebuilt since: a rollback now would take them from readers."""
    since, kept = promotion.get("versions"), promotion.get("live_versions")
    if since is None or kept is None:  # a promotion recorded before rollbacks checked this
        return []
    hidden: dict[str, set[Partition]] = {}
    try:
        for t in TABLES:
            rebuilt = last_commit_ms(warehouse.table(t, previous), kept[t.value])
            for c in commits_after(warehouse.table(t, live), since[t.value]):
                for p in c.partitions:
                    if c.timestamp_ms >= rebuilt.get(p, 0):
                        hidden.setdefault(t.value, set()).add(p)
    except CommitsGone as exc:
        return [str(exc)]
    if not hidden:
        return []
    listed = "; ".join(f"{t}: {describe(ps)}" for t, ps in sorted(hidden.items()))
    return [
        f"{live} changed since readers switched to it ({listed}): rolling back to {previous} "
        f"would hide that. Materialize those partitions in the release location (it writes "
        f"{previous} now), then roll back again"
    ]
