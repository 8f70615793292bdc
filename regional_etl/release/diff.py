"""The diff of a release against the live tables over its dates: both sides read at pinned
Delta versions, compared by `transforms.release_diff`, recorded as a `ReleaseDiff`."""

from __future__ import annotations

from functools import reduce
from typing import TYPE_CHECKING

from regional_etl.contract import Table, schema
from regional_etl.io.delta import daily_predicate, read_table
from regional_etl.release.commits import ABSENT, TABLES, table_versions
from regional_etl.release.pointer import now, read_pointer
from regional_etl.release.report import ReleaseDiff
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.transforms.release_diff import revenue_diff, table_diff

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def _read_at(spark: SparkSession, path: str, table: Table, version: int) -> DataFrame:
    # A first release may add a table the live side never had: it diffs as all-new rows.
    if version == ABSENT:
        return spark.createDataFrame([], schema(table))
    return read_table(spark, path, version)


def compute_diff(
    spark: SparkSession,
    warehouse: WarehouseResource,
    candidate: str,
    dates: list[str],
    run_id: str,
) -> ReleaseDiff:
    """Diff every table of `candidate` against the live namespace over `dates`, with Spark.

    Both sides are read at the versions the report records: over Spark Connect every action
    sends its plan again, and the diff must describe exactly what a promotion then checks."""
    live = read_pointer(warehouse).live
    live_versions = table_versions(spark, warehouse, live)
    versions = table_versions(spark, warehouse, candidate)
    where = daily_predicate(dates)
    frames = {
        t: (
            _read_at(spark, warehouse.table(t, live), t, live_versions[t.value]).where(where),
            _read_at(spark, warehouse.table(t, candidate), t, versions[t.value]).where(where),
        )
        for t in TABLES
    }
    diffs = [table_diff(old, new, t) for t, (old, new) in frames.items()]
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
        live=live,
        candidate=candidate,
        dates=sorted(dates),
        tables=rows,
        revenue=revenue,
        versions=versions,
        run_id=run_id,
        computed_at=now(),
        live_versions=live_versions,
    )
