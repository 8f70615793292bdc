"""A backfill executed in this process, when no daemon runs: the runs Dagster's asset backfill
would launch, executed with public APIs one after the other.

Only the daemon records a backfill, so this one has no row on the UI's Backfills page; its runs
carry the backfill's tags, as a daemon's would, and the Runs page lists them with "Show runs
within backfills" or the tag filter `dagster/backfill=<id>`.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterInstance, Definitions

from regional_etl.backfill.report import BACKFILL_ID_TAG, Progress

# The tags of a range run, as Dagster's backfill sets them.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def new_backfill_id() -> str:
    """An id of the form Dagster gives its backfills (eight lower-case letters)."""
    return "".join(random.choices(string.ascii_lowercase, k=8))


def execute(
    defs: Definitions,
    instance: DagsterInstance,
    backfill_id: str,
    targets: Mapping[AssetKey, Sequence[str]],
    orders: AssetKey,
    run_log: Path,
    progress: Callable[[Progress], None],
) -> Progress:
    """Execute the backfill of the partitions `targets` of each asset as the daemon would: in
    rounds, each requesting every partition whose targeted parents are all published, and
    failing without a run those that have a failed one. The progress and the final state count
    the partitions of `orders`. The runs' output goes to `run_log`."""
    job = defs.resolve_implicit_global_asset_job_def()
    deps = {s.key: [d.asset_key for d in s.deps] for s in defs.resolve_all_asset_specs()}
    waiting = {key: set(keys) for key, keys in targets.items()}
    targeted = {key: set(keys) for key, keys in targets.items()}
    published: dict[AssetKey, set[str]] = {key: set() for key in targets}
    failed: dict[AssetKey, set[str]] = {key: set() for key in targets}

    def state(status: str) -> Progress:
        return Progress(status, len(published[orders]), len(failed[orders]), len(targets[orders]))

    while True:
        requested: dict[AssetKey, set[str]] = {}
        for key, keys in waiting.items():
            for partition in sorted(keys):
                parents = [
                    (parent, k)
                    for parent in deps[key]
                    if parent in targeted
                    for k in _read_by(partition, targeted[parent])
                ]
                if any(k in failed[parent] for parent, k in parents):
                    failed[key].add(partition)
                elif all(k in published[parent] for parent, k in parents):
                    requested.setdefault(key, set()).add(partition)
                else:
                    continue
                keys.discard(partition)
        if not requested:
            return state("COMPLETED_FAILED" if any(failed.values()) else "COMPLETED_SUCCESS")
        for asset_keys, partitions in _runs(defs, requested):
            progress(state("REQUESTED"))
            tags = {
                BACKFILL_ID_TAG: backfill_id,
                RANGE_START_TAG: partitions[0],
                RANGE_END_TAG: partitions[-1],
            }
            # The runs print what a daemon's runs print to their own processes: their event
            # log (also on the instance, the UI's run page) and library warnings. The terminal
            # keeps the progress bar and the summary; the rest goes to a file.
            with open(run_log, "a") as log, redirect_stdout(log), redirect_stderr(log):
                result = job.execute_in_process(
                    instance=instance, asset_selection=asset_keys, tags=tags, raise_on_error=False
                )
            done = {(e.asset_key, e.partition) for e in result.get_asset_materialization_events()}
            for key in asset_keys:
                published[key] |= {str(p) for k, p in done if k == key and p is not None}
                failed[key] |= set(partitions) - published[key]


def _read_by(partition: str, parent_keys: Collection[str]) -> list[str]:
    """The partitions among `parent_keys` that `partition` reads: itself in the same scheme, or
    across the daily and the (date, region) schemes every one of its date
    (`partitions.SAME_DATE`)."""
    if partition in parent_keys:
        return [partition]
    date, regional = partition.split("|")[0], "|" in partition
    return [k for k in parent_keys if ("|" in k) != regional and k.split("|")[0] == date]


def _runs(
    defs: Definitions, requested: Mapping[AssetKey, Collection[str]]
) -> list[tuple[list[AssetKey], list[str]]]:
    """The runs (assets, the partitions of their range) Dagster's backfill makes of
    `requested`: the assets with the same partitions, partition definition and backfill policy
    together, one run per contiguous range of their partitions (for (date, region), one per
    value of the dimension with fewer values), a `multi_run` policy's range cut into runs of at
    most its number of partitions."""
    groups: dict[tuple[Any, frozenset[str], Any], list[AssetKey]] = {}
    for key, keys in requested.items():
        assets_def = defs.resolve_assets_def(key)
        group = (assets_def.partitions_def, frozenset(keys), assets_def.backfill_policy)
        groups.setdefault(group, []).append(key)
    runs = []
    for (partitions_def, keys, policy), asset_keys in groups.items():
        for key_range in partitions_def.subset_with_partition_keys(keys).get_partition_key_ranges(
            partitions_def
        ):
            in_range = [str(k) for k in partitions_def.get_partition_keys_in_range(key_range)]
            # No policy: a run per partition; single_run: no limit.
            size = (policy.max_partitions_per_run if policy else 1) or len(in_range)
            for i in range(0, len(in_range), size):
                runs.append((sorted(asset_keys, key=str), in_range[i : i + size]))
    return sorted(runs, key=lambda run: (run[1][0], str(run[0])))
