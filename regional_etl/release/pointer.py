"""The live-release pointer: which namespace readers see, the lock every switch takes, and the
one atomic rewrite that switches them."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from regional_etl.contract import Table
from regional_etl.io.delta import read_table
from regional_etl.io.files import atomic_write
from regional_etl.resources.warehouse import BLUE, WarehouseResource

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

POINTER_FILE = "_live_release.json"


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


@contextlib.contextmanager
def pointer_lock(warehouse: WarehouseResource) -> Iterator[Pointer]:
    """Hold the warehouse's release lock and yield the pointer as it is under it.

    Two switches at once would each read the old pointer and the second would lose the first;
    a seed of a namespace that a promotion makes live meanwhile would overwrite live tables.
    """
    path = pointer_path(warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_suffix(".lock")):
        yield read_pointer(warehouse)


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
