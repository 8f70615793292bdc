"""Blue-green releases: the live-release pointer, the data diff, promotion and rollback.

A release ("green") is the whole pipeline materialized into its own warehouse namespace by its
own code location, beside the live tables ("blue", the warehouse root). Readers never name a
namespace: they resolve the pointer file `<warehouse>/_live_release.json` once per query
(`live`, `read_table`) and read every table of that query from the namespace it names. Promotion
and rollback rewrite that one file atomically (`os.replace`), so a query sees all tables of one
release, never a mix. The pointer is a file, so the warehouse root must be a (shared) file
system path; the tables themselves are untouched by a promotion.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource
from pydantic import Field

from regional_etl.contract import REGIONS, Table, partition_columns, schema
from regional_etl.io.delta import _sql_ident, daily_predicate, history
from regional_etl.io.delta import read_table as read_path
from regional_etl.resources.warehouse import BLUE, WarehouseResource

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from pyspark.sql import DataFrame, SparkSession

POINTER_FILE = "_live_release.json"
REPORT_FILE = "_release_diff.json"

# Row identity of each table inside its partition; every other column except `run_id` (which
# differs on every run by design) is compared.
DIFF_KEYS: dict[Table, tuple[str, ...]] = {
    Table.RAW_ORDERS: ("source_file", "line_number"),
    Table.ORDERS: ("order_id",),
    Table.ORDERS_QUARANTINE: ("source_file", "line_number"),
    Table.DAILY_REVENUE: ("region",),
    Table.FX_RATES: ("currency",),
}
NOT_COMPARED = {"run_id"}


class ReleaseRefused(RuntimeError):
    """A promotion or rollback that must not happen, with every reason."""

    def __init__(self, what: str, reasons: list[str]) -> None:
        super().__init__(f"{what} refused: " + "; ".join(reasons))
        self.reasons = reasons


class ReleaseThresholds(ConfigurableResource):
    """How far a release's data may move from the live tables and still be promoted."""

    max_changed_orders: int = Field(
        default=1000,
        description="Most orders added, removed or changed (any column) over the whole range.",
    )
    max_revenue_diff_usd: float = Field(
        default=1000.0,
        description="Largest revenue difference of one date, in USD: the sum over regions of "
        "|green - blue|, so revenue moved between regions counts too.",
    )

    def violations(self, diff: ReleaseDiff) -> list[str]:
        found = []
        if diff.changed_orders > self.max_changed_orders:
            found.append(
                f"{diff.changed_orders} orders added, removed or changed, more than "
                f"max_changed_orders={self.max_changed_orders}"
            )
        limit = Decimal(str(self.max_revenue_diff_usd))
        for date, usd in sorted(diff.revenue_diff_by_date().items()):
            if usd > limit:
                found.append(
                    f"{date}: revenue differs by {usd} USD, more than "
                    f"max_revenue_diff_usd={self.max_revenue_diff_usd}"
                )
        return found


# The pointer ---------------------------------------------------------------------------------


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
        return read_path(spark, self.path(table))


def live(warehouse: WarehouseResource) -> LiveRelease:
    """Resolve the pointer once; use the result for all tables of a query."""
    return LiveRelease(warehouse, read_pointer(warehouse).live)


def read_table(spark: SparkSession, warehouse: WarehouseResource, table: Table) -> DataFrame:
    """One live table, for a query that reads only one."""
    return live(warehouse).read(spark, table)


@contextlib.contextmanager
def _pointer_lock(warehouse: WarehouseResource) -> Iterator[None]:
    # Two switches at once would each read the old pointer and the second would lose the first.
    path = pointer_path(warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_pointer(warehouse: WarehouseResource, pointer: Pointer) -> None:
    path = pointer_path(warehouse)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(asdict(pointer), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    # The one step readers see: the rename is atomic, so a reader opens the old file or the new.
    os.replace(tmp, path)


# The diff ------------------------------------------------------------------------------------


def table_diff(blue: DataFrame, green: DataFrame, table: Table) -> DataFrame:
    """Per (order_date, region) of a table: rows on each side, keys only in blue, only in
    green, keys in both whose values differ, and `changed_columns` (column -> such keys).
    Region is null for the tables without one (fx_rates). The same columns for every table, so
    the diffs of all tables are one union and one Spark job."""
    from pyspark.sql import functions as F

    keys = [*partition_columns(table), *DIFF_KEYS[table]]
    values = [f.name for f in schema(table).fields if f.name not in {*keys, *NOT_COMPARED}]

    def side(df: DataFrame, tag: str) -> DataFrame:
        return df.select(
            *keys, *[F.col(v).alias(f"{tag}_{v}") for v in values], F.lit(True).alias(f"in_{tag}")
        )

    joined = side(blue, "b").join(side(green, "g"), on=keys, how="full_outer")
    in_b, in_g = F.col("in_b").isNotNull(), F.col("in_g").isNotNull()
    differs = {v: in_b & in_g & ~F.col(f"b_{v}").eqNullSafe(F.col(f"g_{v}")) for v in values}
    any_differs = reduce(lambda a, b: a | b, differs.values(), F.lit(False))
    region = F.col("region") if "region" in keys else F.lit(None).cast("string")
    return joined.groupBy("order_date", region.alias("region")).agg(
        F.lit(table.value).alias("table"),
        F.count_if(in_b).alias("blue_rows"),
        F.count_if(in_g).alias("green_rows"),
        F.count_if(in_b & ~in_g).alias("only_blue"),
        F.count_if(in_g & ~in_b).alias("only_green"),
        F.count_if(any_differs).alias("changed"),
        F.create_map(*[x for v, c in differs.items() for x in (F.lit(v), F.count_if(c))]).alias(
            "changed_columns"
        ),
    )


def revenue_diff(blue: DataFrame, green: DataFrame) -> DataFrame:
    """Revenue per (order_date, region) of two `gold/daily_revenue` frames and green - blue."""
    from pyspark.sql import functions as F

    def side(df: DataFrame, name: str) -> DataFrame:
        return df.select("order_date", "region", F.col("revenue_usd").alias(name))

    joined = side(blue, "blue_usd").join(
        side(green, "green_usd"), on=["order_date", "region"], how="full_outer"
    )
    zero = F.lit(0).cast("decimal(18,2)")
    return joined.select(
        "order_date",
        "region",
        F.coalesce("blue_usd", zero).alias("blue_usd"),
        F.coalesce("green_usd", zero).alias("green_usd"),
        (F.coalesce("green_usd", zero) - F.coalesce("blue_usd", zero)).alias("diff_usd"),
    )


@dataclass
class ReleaseDiff:
    """What a release changes against the live tables over its dates; also the report file."""

    live: str
    candidate: str
    dates: list[str]
    # table, order_date, region, blue_rows, green_rows, only_blue, only_green, changed,
    # changed_columns ({column: keys whose value differs})
    tables: list[dict[str, Any]]
    # order_date, region, blue_usd, green_usd, diff_usd (decimal strings)
    revenue: list[dict[str, str]]
    # Delta version of each candidate table when diffed: a promotion checks it is still so.
    versions: dict[str, int]
    run_id: str
    computed_at: str

    @property
    def changed_orders(self) -> int:
        return sum(
            r["only_blue"] + r["only_green"] + r["changed"]
            for r in self.tables
            if r["table"] == Table.ORDERS.value
        )

    def revenue_diff_by_date(self) -> dict[str, Decimal]:
        by_date = dict.fromkeys(self.dates, Decimal(0))
        for r in self.revenue:
            by_date[r["order_date"]] += abs(Decimal(r["diff_usd"]))
        return by_date

    def markdown(self) -> str:
        lines = [
            f"**{self.candidate}** against live **{self.live}**, "
            f"{self.dates[0]} .. {self.dates[-1]}: {self.changed_orders} orders added, removed "
            "or changed.",
            "",
            "| table | rows blue | rows green | only blue | only green | changed | columns |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        totals: dict[str, list[int]] = {}
        columns: dict[str, dict[str, int]] = {}
        for r in self.tables:
            t = totals.setdefault(r["table"], [0] * 5)
            for i, k in enumerate(("blue_rows", "green_rows", "only_blue", "only_green")):
                t[i] += r[k]
            t[4] += r["changed"]
            for c, n in r["changed_columns"].items():
                columns.setdefault(r["table"], {}).setdefault(c, 0)
                columns[r["table"]][c] += n
        for name, t in totals.items():
            cols = ", ".join(f"{c} ({n})" for c, n in sorted(columns.get(name, {}).items()))
            lines.append(f"| {name} | " + " | ".join(map(str, t)) + f" | {cols} |")
        lines += [
            "",
            "| date | revenue difference, USD (sum of abs over regions) |",
            "| --- | ---: |",
        ]
        lines += [f"| {d} | {usd} |" for d, usd in sorted(self.revenue_diff_by_date().items())]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReleaseDiff:
        return cls(**json.loads(text))


def _read_or_empty(spark: SparkSession, path: str, table: Table) -> DataFrame:
    # A first release may add a table the live side never had: it diffs as all-new rows.
    if not (Path(path) / "_delta_log").is_dir():
        return spark.createDataFrame([], schema(table))
    return read_path(spark, path)


def table_versions(spark: SparkSession, warehouse: WarehouseResource, namespace: str) -> dict:
    return {
        t.value: int(history(spark, warehouse.table(t, namespace), 1).collect()[0]["version"])
        for t in DIFF_KEYS
    }


def compute_diff(
    spark: SparkSession,
    warehouse: WarehouseResource,
    candidate: str,
    dates: list[str],
    run_id: str,
) -> ReleaseDiff:
    """Diff every table of `candidate` against the live namespace over `dates`, with Spark."""
    blue = read_pointer(warehouse).live
    where = daily_predicate(dates)
    frames = {
        t: (
            _read_or_empty(spark, warehouse.table(t, blue), t).where(where),
            _read_or_empty(spark, warehouse.table(t, candidate), t).where(where),
        )
        for t in DIFF_KEYS
    }
    diffs = [table_diff(b, g, t) for t, (b, g) in frames.items()]
    rows = [
        {
            **r.asDict(),
            "order_date": str(r["order_date"]),
            "changed_columns": {c: n for c, n in r["changed_columns"].items() if n},
        }
        for r in reduce(lambda a, b: a.unionByName(b), diffs)
        .orderBy("table", "order_date", "region")
        .collect()
    ]
    revenue = [
        {k: str(v) for k, v in r.asDict().items()}
        for r in revenue_diff(*frames[Table.DAILY_REVENUE])
        .orderBy("order_date", "region")
        .collect()
    ]
    return ReleaseDiff(
        live=blue,
        candidate=candidate,
        dates=sorted(dates),
        tables=rows,
        revenue=revenue,
        versions=table_versions(spark, warehouse, candidate),
        run_id=run_id,
        computed_at=_now(),
    )


def report_path(warehouse: WarehouseResource, namespace: str) -> Path:
    return Path(warehouse.namespace_root(namespace)) / REPORT_FILE


def write_report(warehouse: WarehouseResource, diff: ReleaseDiff) -> Path:
    path = report_path(warehouse, diff.candidate)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(diff.to_json())
    os.replace(tmp, path)
    return path


def seed(spark: SparkSession, warehouse: WarehouseResource) -> list[str]:
    """Start this location's release from the live tables: each becomes a Delta shallow clone
    of its live twin (metadata only, the data files are shared), so dates outside the release
    range are the live ones when the release is promoted. A table this namespace had from an
    earlier release is replaced. Returns the tables cloned."""
    source = read_pointer(warehouse).live
    if source == warehouse.namespace:
        raise ReleaseRefused(f"seeding {source}", [f"{source} is live: seed a release namespace"])
    cloned = []
    for t in DIFF_KEYS:
        src, dst = warehouse.table(t, source), warehouse.table(t, warehouse.namespace)
        if (Path(src) / "_delta_log").is_dir():
            spark.sql(
                f"CREATE OR REPLACE TABLE delta.{_sql_ident(dst)} "
                f"SHALLOW CLONE delta.{_sql_ident(src)}"
            )
            cloned.append(t.value)
    return cloned


# Gates, promotion, rollback ------------------------------------------------------------------


def gate_failures(instance: DagsterInstance, namespace: str, dates: list[str]) -> list[str]:
    """Every blocking gate of the namespace's assets over `dates` whose latest result on the
    instance is not a pass (failed, or never evaluated: a partition that was not built)."""
    from dagster import AssetCheckKey, AssetKey
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

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
                if s != AssetCheckExecutionRecordStatus.SUCCEEDED:
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
    passed and the diff is within the thresholds; returns the pointer's history entry."""
    candidate = warehouse.namespace
    with _pointer_lock(warehouse):
        pointer = read_pointer(warehouse)
        if candidate == pointer.live:
            raise ReleaseRefused(f"promotion of {candidate}", [f"{candidate} is already live"])
        path = report_path(warehouse, candidate)
        if not path.exists():
            raise ReleaseRefused(
                f"promotion of {candidate}", ["no diff yet: materialize release_diff first"]
            )
        diff = ReleaseDiff.from_json(path.read_text())
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
        reasons += gate_failures(instance, candidate, diff.dates)
        reasons += thresholds.violations(diff)
        if reasons:
            raise ReleaseRefused(f"promotion of {candidate}", reasons)
        entry = _entry("promote", pointer.live, candidate, run_id, job, user)
        entry.update(dates=[diff.dates[0], diff.dates[-1]], report=str(path), diff_run=diff.run_id)
        _write_pointer(warehouse, Pointer(candidate, pointer.live, [*pointer.history, entry]))
    return entry


def rollback(
    warehouse: WarehouseResource, run_id: str, job: str, user: str | None = None
) -> dict[str, Any]:
    """Point readers back at the namespace that was live before the last promotion."""
    with _pointer_lock(warehouse):
        pointer = read_pointer(warehouse)
        last = pointer.history[-1] if pointer.history else None
        if last is None or last["action"] != "promote" or pointer.previous is None:
            raise ReleaseRefused(
                "rollback",
                [f"no promotion to undo ({pointer.live} is live since the start)"]
                if last is None
                else ["the last switch was a rollback already: promote to move forward again"],
            )
        entry = _entry("rollback", pointer.live, pointer.previous, run_id, job, user)
        _write_pointer(
            warehouse, Pointer(pointer.previous, pointer.live, [*pointer.history, entry])
        )
    return entry


def _entry(action: str, old: str, new: str, run_id: str, job: str, user: str | None) -> dict:
    return {
        "action": action,
        "from": old,
        "to": new,
        "run_id": run_id,
        "job": job,
        "user": user,
        "at": _now(),
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
