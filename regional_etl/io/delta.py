"""Idempotent Delta writes: replace exactly the target partitions, atomically, in one commit."""

from __future__ import annotations

import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regional_etl.contract import Table, partition_columns, schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from regional_etl.partitions import DateRegion


# Delta's optimistic concurrency: a commit that lost to a concurrent commit touching the same
# partitions fails with one of these (by exception name, or by error class over Spark Connect).
_CONFLICTS = (
    "DELTA_CONCURRENT_",
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "MetadataChangedException",
)
CONFLICT_RETRIES = 10
# Where a run looks for its own commit: the other writers of a table commit a few times at most
# between a run's commit and its lookup, and reading the whole history grows with the log.
RECENT_COMMITS = 50

# What a writer holds around its commit, given the table and the replaceWhere predicate: it may
# raise instead of letting the commit happen. The live location's writers pass one that takes
# the shared side of the release lock (`release.pointer.live_commit`); this layer knows nothing
# of releases.
CommitGuard = Callable[[Table, str], contextlib.AbstractContextManager[object]]


def is_write_conflict(exc: BaseException) -> bool:
    """True when `exc` is Delta rejecting a commit because another writer committed first."""
    text = f"{type(exc).__name__} {exc}"
    return any(name in text for name in _CONFLICTS)


@dataclass(frozen=True)
class WriteResult:
    """What one commit did, for asset metadata."""

    path: str
    version: int
    rows: int
    files_added: int
    # Rows the commit removed (Delta's `numDeletedRows`); None when Delta did not record it.
    rows_removed: int | None = None
    # The run (`userMetadata`) of the commit right before this one; None if unknown.
    previous_run_id: str | None = None

    def metadata(self) -> dict[str, Any]:
        from dagster import MetadataValue

        return {
            "rows_written": MetadataValue.int(self.rows),
            "delta_version": MetadataValue.int(self.version),
            "files_added": MetadataValue.int(self.files_added),
            "path": MetadataValue.path(self.path),
        }


def ensure_table(spark: SparkSession, path: str, table: Table) -> None:
    """Create the empty, partitioned table once, before any partition writer runs.

    Concurrent first writers to a missing table would both try to create it and one would fail;
    creating it up front turns later writes into replaces on an existing log. SQL, not the
    `DeltaTable` builder: it is what Spark Connect serves without the Delta Connect plugin. Two
    processes creating the table at once race on version 0; the loser retries and finds it.
    """
    columns = ", ".join(
        f"`{f.name}` {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}"
        for f in schema(table).fields
    )
    ddl = (
        f"CREATE TABLE IF NOT EXISTS delta.{_sql_ident(path)} ({columns}) USING delta "
        f"PARTITIONED BY ({', '.join(partition_columns(table))}) "
        "TBLPROPERTIES ('delta.enableDeletionVectors' = 'false')"
    )
    for attempt in range(5):
        try:
            spark.sql(ddl)
            return
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def history(spark: SparkSession, path: str, limit: int | None = None) -> DataFrame:
    """The table's commits (`DESCRIBE HISTORY`), newest first; the newest `limit` only if given.
    Delta reads one log file per commit listed: without a limit, every commit since the first."""
    limit_clause = f" LIMIT {int(limit)}" if limit else ""
    return spark.sql(f"DESCRIBE HISTORY delta.{_sql_ident(path)}{limit_clause}")


def _sql_ident(path: str) -> str:
    return "`" + path.replace("`", "``") + "`"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def regional_predicate(partitions: Iterable[DateRegion]) -> str:
    """A replaceWhere predicate covering exactly these (date, region) partitions."""
    by_date: dict[str, set[str]] = defaultdict(set)
    for p in partitions:
        by_date[p.order_date].add(p.region)
    if not by_date:
        raise ValueError("no partitions to replace")
    # Group dates that share a region set so a 30-day x 4-region backfill stays one short clause.
    by_regions: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for date, regions in sorted(by_date.items()):
        by_regions[tuple(sorted(regions))].append(date)
    clauses = [
        f"(order_date IN ({', '.join(f'DATE {_sql_str(d)}' for d in dates)})"
        f" AND region IN ({', '.join(_sql_str(r) for r in regions)}))"
        for regions, dates in sorted(by_regions.items())
    ]
    return " OR ".join(clauses)


def daily_predicate(dates: Iterable[str]) -> str:
    dates = sorted(set(dates))
    if not dates:
        raise ValueError("no partitions to replace")
    return f"order_date IN ({', '.join(f'DATE {_sql_str(d)}' for d in dates)})"


def replace_partitions(
    df: DataFrame,
    path: str,
    table: Table,
    predicate: str,
    run_id: str,
    one_file_per_partition: bool = False,
    guard: CommitGuard | None = None,
) -> WriteResult:
    """Overwrite exactly the rows matching `predicate` with `df`, in one atomic Delta commit.

    Re-running with the same input leaves the same table content (a new version, same rows).
    Delta rejects rows of `df` outside the predicate, so a bug cannot spill into other partitions.
    The commit is tagged with the Dagster run id so `DESCRIBE HISTORY` says which run wrote it.

    `one_file_per_partition` shuffles the rows by the partition columns first, so each table
    partition is written by one task. Worth it when a partition's rows are spread over all the
    tasks (after a shuffle on other keys): one file instead of one per task, for the same time.

    `guard`, if given, is held around the table's creation, the commit and its conflict
    retries, and may refuse them by raising: then nothing is written.
    """

    spark = df.sparkSession
    target = schema(table)
    if one_file_per_partition:
        df = df.repartition(*partition_columns(table))
    aligned = df.select([df[f.name].cast(f.dataType).alias(f.name) for f in target.fields])
    writer = (
        aligned.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("userMetadata", run_id)
        # A table created under an older contract gains the columns the contract added since
        # (nullable ones: bronze's `defect` and `line_bytes`); `aligned` holds nothing else.
        .option("mergeSchema", "true")
        .partitionBy(*partition_columns(table))
    )
    with guard(table, predicate) if guard else contextlib.nullcontext():
        ensure_table(spark, path, table)
        # Two runs replacing the same partition at once: Delta commits one and rejects the
        # other, whose files never become visible. Writing again is safe, the replace being
        # idempotent: the partition ends up with the complete rows of whichever run commits
        # last, never a mix.
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                writer.save(path)
                break
            except Exception as exc:
                if not is_write_conflict(exc) or attempt == CONFLICT_RETRIES:
                    raise
                # Jittered so writers that collided once do not collide again in lockstep.
                time.sleep(min(5.0, 0.2 * 2**attempt) * (0.5 + random.random()))
    return commit_of(spark, path, run_id)


def commit_of(spark: SparkSession, path: str, run_id: str) -> WriteResult:
    """The newest commit that `run_id` made to the table, found by its `userMetadata`: with
    other runs writing the same table at once, "the latest commit" may be theirs.

    Replacing nothing with nothing (an empty quarantine, say) commits nothing: then the result
    is the table's current version, with no rows and no files. Only the newest RECENT_COMMITS
    commits are looked at, in one round trip.
    """
    commits = {int(c["version"]): c for c in history(spark, path, RECENT_COMMITS).collect()}
    own = [v for v, c in commits.items() if c["userMetadata"] == run_id]
    if not own:
        return WriteResult(path=path, version=max(commits), rows=0, files_added=0)
    version = max(own)
    metrics = commits[version]["operationMetrics"] or {}
    previous = commits.get(version - 1)
    removed = metrics.get("numDeletedRows")
    return WriteResult(
        path=path,
        version=version,
        rows=int(metrics.get("numOutputRows", 0)),
        files_added=int(metrics.get("numFiles", metrics.get("numAddedFiles", 0))),
        rows_removed=None if removed is None else int(removed),
        previous_run_id=previous["userMetadata"] if previous is not None else None,
    )


def current_version(spark: SparkSession, path: str) -> int:
    """The table's newest committed version, to pin a run's reads to (`read_table`)."""
    [latest] = history(spark, path, 1).select("version").collect()
    return int(latest["version"])


def read_table(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """The table at `version`, or unpinned: then each action reads the version that is newest
    when it runs, as Spark Connect sends the plan again with every action."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def read_pinned(spark: SparkSession, path: str) -> DataFrame:
    """The table at its current version, for every action of the frame: a step whose actions
    must agree (a gate pass, then the writes it gated) reads what other writers commit later
    at none of them."""
    return read_table(spark, path, current_version(spark, path))
