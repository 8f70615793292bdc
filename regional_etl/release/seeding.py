"""Starting a release from the live tables: a copy of each at a recorded Delta version, so the
release only rebuilds its range and a promotion knows what the live tables did since."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from regional_etl.contract import Table, schema
from regional_etl.io.delta import history, read_table, replace_partitions
from regional_etl.io.files import atomic_write
from regional_etl.release.commits import ABSENT, TABLES, exists, table_versions
from regional_etl.release.pointer import ReleaseRefused, now, pointer_lock
from regional_etl.resources.warehouse import WarehouseResource

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SEED_FILE = "_release_seed.json"
# Every row of a table: order_date is a non-null partition column of every table, so this
# replaceWhere replaces whole partitions, all of them, in one commit.
EVERY_PARTITION = "order_date IS NOT NULL"


@dataclass(frozen=True)
class Seed:
    """Where a release started: the live namespace and its tables' versions it was copied from
    (`live_versions`), the release's own versions right after the copy (`versions`), and the
    partitions a catch-up copied again since: table -> {partition: live version}."""

    live: str
    candidate: str
    live_versions: dict[str, int]
    versions: dict[str, int]
    run_id: str
    at: str
    copied: dict[str, dict[str, int]] = field(default_factory=dict)

    def covers(self, table: str, partition: str) -> int:
        """The live version up to which the release holds this partition's live data."""
        return self.copied.get(table, {}).get(partition, self.live_versions[table])


def seed_path(warehouse: WarehouseResource, namespace: str) -> Path:
    return Path(warehouse.namespace_root(namespace)) / SEED_FILE


def read_seed(warehouse: WarehouseResource, namespace: str) -> Seed | None:
    path = seed_path(warehouse, namespace)
    return Seed(**json.loads(path.read_text())) if path.exists() else None


def write_seed(warehouse: WarehouseResource, record: Seed) -> None:
    atomic_write(seed_path(warehouse, record.candidate), json.dumps(asdict(record), indent=2))


def copy_live(
    spark: SparkSession,
    warehouse: WarehouseResource,
    live: str,
    table: Table,
    version: int,
    predicate: str,
    run_id: str,
) -> None:
    """Replace the partitions of `predicate` in this location's table with the live table's
    at `version` (ABSENT: with nothing), in one commit."""
    rows = (
        spark.createDataFrame([], schema(table))
        if version == ABSENT
        else read_table(spark, warehouse.table(table, live), version).where(predicate)
    )
    replace_partitions(
        rows, warehouse.table(table), table, predicate, run_id, one_file_per_partition=True
    )


def seed(spark: SparkSession, warehouse: WarehouseResource, run_id: str) -> Seed:
    """Replace every table of this location's namespace with the live one at its current
    version, in one commit per table, and record those versions (`_release_seed.json`).

    A copy of the data, not a shallow clone: Delta refuses to clone into a table that has data
    (a second seed), and a clone's files are blue's, by absolute path, with a commit that other
    engines (delta-rs) cannot read. The namespace keeps its own history; a table that an
    earlier version of this seed cloned is dropped first, for that reason. Under the release
    lock, so the namespace cannot become live half-seeded.
    """
    candidate = warehouse.slot
    with pointer_lock(warehouse) as pointer:
        source = pointer.live
        if source == candidate:
            raise ReleaseRefused(
                f"seeding {source}", [f"{source} is live: seed a release namespace"]
            )
        live_versions = table_versions(spark, warehouse, source)
        for t in TABLES:
            dst = warehouse.table(t, candidate)
            if exists(dst) and history(spark, dst).where("operation = 'CLONE'").count():
                shutil.rmtree(dst)
            copy_live(spark, warehouse, source, t, live_versions[t.value], EVERY_PARTITION, run_id)
        record = Seed(
            live=source,
            candidate=candidate,
            live_versions=live_versions,
            versions=table_versions(spark, warehouse, candidate),
            run_id=run_id,
            at=now(),
        )
        write_seed(warehouse, record)
    return record
