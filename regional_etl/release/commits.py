"""What a namespace's tables are at (their Delta versions), and which partitions the commits after
a version touched: how a release knows that the live tables moved while it was built."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from regional_etl.io.delta import current_version
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.transforms.release_diff import DIFF_KEYS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The version of a table that does not exist (yet): every commit it gets is after it.
ABSENT = -1
TABLES = tuple(DIFF_KEYS)


def exists(path: str) -> bool:
    return (Path(path) / "_delta_log").is_dir()


def table_versions(
    spark: SparkSession, warehouse: WarehouseResource, namespace: str
) -> dict[str, int]:
    """The current Delta version of every table of a namespace (ABSENT for a missing one)."""
    return {
        t.value: current_version(spark, p) if exists(p := warehouse.table(t, namespace)) else ABSENT
        for t in TABLES
    }


class CommitsGone(ValueError):
    """The commits after a version are no longer all in the Delta log."""


@dataclass(frozen=True)
class Partition:
    """A (date, region) partition of a table; region is None for the daily tables."""

    order_date: str
    region: str | None

    def __str__(self) -> str:
        return self.order_date if self.region is None else f"{self.order_date}|{self.region}"


@dataclass(frozen=True)
class Commit:
    """One commit that changed data: its version, time (ms, the writer's clock), run id
    (`userMetadata`) and the partitions whose files it added or removed."""

    version: int
    timestamp_ms: int
    run_id: str | None
    partitions: frozenset[Partition]


def commits_after(path: str, version: int) -> list[Commit]:
    """The data-changing commits of the table at `path` after `version`, oldest first.

    Read from the commit files of the Delta log (the protocol's `add` / `remove` actions and
    their `partitionValues`): `DESCRIBE HISTORY` gives the replaceWhere predicate as text, not
    the partitions a commit touched. Local paths only, like the pointer. A commit that changed
    no data (a table created empty, files rewritten with `dataChange: false`) is left out; a
    gap (the log's retention removed the next commit) raises CommitsGone.
    """
    log = Path(path) / "_delta_log"
    later = sorted(
        v for f in log.glob("*.json") if f.stem.isdigit() and (v := int(f.stem)) > version
    )
    if later and later[0] != version + 1:
        raise CommitsGone(
            f"{path}: the Delta log no longer has commit {version + 1} (log retention removed "
            "it), so what changed since cannot be told: start the release again"
        )
    found: list[Commit] = []
    for next_version in later:
        file = log / f"{next_version:020d}.json"
        timestamp, run_id, touched = 0, None, set()
        for line in file.read_text().splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            if info := action.get("commitInfo"):
                timestamp, run_id = int(info.get("timestamp") or 0), info.get("userMetadata")
            for kind in ("add", "remove"):
                change = action.get(kind)
                if change and change.get("dataChange", True):
                    values = change.get("partitionValues") or {}
                    touched.add(Partition(values["order_date"], values.get("region")))
        if touched:
            found.append(Commit(next_version, timestamp, run_id, frozenset(touched)))
    return found


def last_commit_ms(path: str, version: int) -> dict[Partition, int]:
    """Per partition, the time (ms) of the last data commit after `version` that touched it."""
    latest: dict[Partition, int] = {}
    for c in commits_after(path, version):
        for p in c.partitions:
            latest[p] = max(latest.get(p, 0), c.timestamp_ms)
    return latest


def describe(partitions: set[Partition], limit: int = 8) -> str:
    """Partitions as a short sorted list for a refusal a person reads."""
    names = sorted(map(str, partitions))
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
