"""The live-release pointer: which namespace readers see, the warehouse's release lock (taken
exclusively by every switch, shared by every commit of the live location), and the one atomic
rewrite that switches them."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import ReadWriteLock

from regional_etl.contract import Table
from regional_etl.io.delta import read_table
from regional_etl.io.files import atomic_write
from regional_etl.io.warehouse import WarehousePaths
from regional_etl.resources.warehouse import BLUE, POINTER_FILE, WarehouseResource

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# The release lock's SQLite database (filelock's ReadWriteLock). Not `_live_release.lock`: a
# process of an older version flocks that file, which a SQLite lock would not see.
LOCK_FILE = "_live_release.rwlock"


class ReleaseRefused(RuntimeError):
    """A seed, promotion or rollback that must not happen, with every reason."""

    def __init__(self, what: str, reasons: list[str]) -> None:
        super().__init__(f"{what} refused: " + "; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class Pointer:
    """Which namespace is live, the one before it, and every switch (who, what, when)."""

    live: str = BLUE
    previous: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def pointer_path(warehouse: WarehouseResource) -> Path:
    if warehouse.is_remote():
        raise ValueError(
            "the release pointer is a file: the warehouse root must be a file system path, "
            f"not {warehouse.warehouse_root}"
        )
    return Path(warehouse.namespace_root(BLUE)) / POINTER_FILE


def read_pointer(warehouse: WarehouseResource) -> Pointer:
    """The pointer as it is now; a warehouse that never had a release is blue."""
    path = pointer_path(warehouse)
    if not path.exists():
        return Pointer()
    return Pointer(**json.loads(path.read_text()))


@dataclass(frozen=True)
class LiveRelease:
    """The live namespace as resolved once: every table of one query is read through it."""

    warehouse: WarehouseResource
    namespace: str

    def path(self, table: Table) -> str:
        return self.warehouse.table(table, self.namespace)

    def read(self, spark: SparkSession, table: Table) -> DataFrame:
        return read_table(spark, self.path(table))


def live(warehouse: WarehouseResource) -> LiveRelease:
    """Resolve the pointer once; use the result for all tables of a query."""
    return LiveRelease(warehouse, read_pointer(warehouse).live)


class LiveNamespaceMoved(RuntimeError):
    """A commit of the live location refused because its namespace is no longer the live one:
    a promotion (or a rollback) switched readers away while the run worked. Nothing of it was
    written."""

    def __init__(self, table: Table, predicate: str, namespace: str, live: str) -> None:
        super().__init__(
            f"{table.value} ({predicate}) not written to {namespace}: readers switched to {live} "
            f"while this run worked, so they would never see it. Re-run these partitions where "
            f"{live} is written (its code location, or this one once it writes {live}): they "
            "will land where readers are."
        )
        self.table, self.predicate, self.namespace, self.live = table, predicate, namespace, live


def _release_lock(warehouse: WarehouseResource) -> ReadWriteLock:
    """The warehouse's one release lock, a new handle for one hold.

    Not filelock's per-path singleton: it coordinates processes, and a thread of this process
    asking for the side another thread holds would get a RuntimeError instead of waiting. Each
    handle is its own SQLite connection, so threads wait on each other as processes do. No
    timeout: a seed holds it for as long as its copy takes, and a holder that dies releases it
    with its connection.
    """
    path = pointer_path(warehouse).with_name(LOCK_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    return ReadWriteLock(path, is_singleton=False)


@contextlib.contextmanager
def pointer_lock(warehouse: WarehouseResource) -> Iterator[Pointer]:
    """Hold the warehouse's release lock exclusively and yield the pointer as it is under it.

    Two switches at once would each read the old pointer and the second would lose the first;
    a seed of a namespace that a promotion makes live meanwhile would overwrite live tables;
    a live commit during a promotion's checks would land after them, unchecked (`live_commit`
    waits while this is held, and a held `live_commit` makes this wait).
    """
    with contextlib.closing(_release_lock(warehouse)) as lock, lock.write_lock():
        yield read_pointer(warehouse)


class CandidateWentLive(RuntimeError):
    """A commit of the release location refused because its namespace became the live one
    while the run worked: it would change what readers see without a diff or a gate."""

    def __init__(self, table: Table, predicate: str, namespace: str) -> None:
        super().__init__(
            f"{table.value} ({predicate}) not written to {namespace}: readers switched to it "
            "while this release run worked. The live location writes it now; launch "
            "start_release to build the next release in the other namespace."
        )
        self.table, self.predicate, self.namespace = table, predicate, namespace


@contextlib.contextmanager
def live_commit(
    warehouse: WarehouseResource, namespace: str, table: Table, predicate: str
) -> Iterator[None]:
    """Hold the release lock shared for one commit of the live location into `namespace`, if it
    is still live; raise LiveNamespaceMoved otherwise.

    Shared, so live runs commit side by side as before. A switch takes the lock exclusively for
    its checks and its pointer rewrite: a commit either ends before the checks start (and they
    see it) or starts after the switch (and finds its namespace no longer live).
    """
    with contextlib.closing(_release_lock(warehouse)) as lock, lock.read_lock():
        live = read_pointer(warehouse).live
        if live != namespace:
            raise LiveNamespaceMoved(table, predicate, namespace, live)
        yield


@contextlib.contextmanager
def candidate_commit(
    warehouse: WarehouseResource, namespace: str, table: Table, predicate: str
) -> Iterator[None]:
    """The release location's side of `live_commit`: one commit into `namespace` while it is
    still not live, else CandidateWentLive. A promotion checks the candidate's versions against
    its diff under the exclusive lock, so a commit before it is seen and refuses it."""
    with contextlib.closing(_release_lock(warehouse)) as lock, lock.read_lock():
        if read_pointer(warehouse).live == namespace:
            raise CandidateWentLive(table, predicate, namespace)
        yield


def write_paths(warehouse: WarehouseResource) -> WarehousePaths:
    """This location's namespace (its slot for this run) as the paths a step writes through,
    every commit guarded: the live location's by `live_commit`, the release location's by
    `candidate_commit`. A remote warehouse has no pointer file, so nothing can switch its
    readers: there the guard is left out."""
    slot = warehouse.slot
    paths = WarehousePaths(warehouse.landing(), warehouse.namespace_root(slot))
    if warehouse.is_remote():
        return paths
    guard = live_commit if warehouse.writes_live() else candidate_commit
    return replace(paths, commit_guard=functools.partial(guard, warehouse, slot))


def write_pointer(warehouse: WarehouseResource, pointer: Pointer) -> None:
    """The one step readers see; call it holding `pointer_lock`. Synced before the rename: a
    switch lost in a crash would be a decision lost, not work to redo."""
    atomic_write(pointer_path(warehouse), json.dumps(asdict(pointer), indent=2), durable=True)


def switch_entry(
    action: str, old: str, new: str, run_id: str, job: str, user: str | None
) -> dict[str, Any]:
    """A line of the pointer's history: what switched, from what to what, by which run."""
    return {
        "action": action,
        "from": old,
        "to": new,
        "run_id": run_id,
        "job": job,
        "user": user,
        "at": now(),
    }


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
