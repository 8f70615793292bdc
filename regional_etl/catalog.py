"""What the Dagster catalog shows of every Delta asset, in Dagster's standard metadata keys.

On the definition: the column schema, read from the data contract (`contract.schema`), the
table's name in the contract, and the owners. On every materialization: row counts (the
partition's and the whole table's at the run's own commit) and the table's URI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagster import (
    AssetKey,
    DagsterInstance,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
)

from regional_etl.contract import Table, partition_columns, schema

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from regional_etl.io.delta import WriteResult

OWNERS = ["team:regional-etl"]

# Dagster's standard keys (its `TableMetadataSet` and `UriMetadataSet`, which dagster 1.13 does
# not export): the UI's catalog, column view and row-count plots read exactly these.
COLUMN_SCHEMA = "dagster/column_schema"
TABLE_NAME = "dagster/table_name"
ROW_COUNT = "dagster/row_count"
PARTITION_ROW_COUNT = "dagster/partition_row_count"
URI = "dagster/uri"


def column_schema(table: Table) -> TableSchema:
    """The contract's columns of `table` as the UI lists them, partition columns marked."""
    partitioned_by = partition_columns(table)
    return TableSchema(
        columns=[
            TableColumn(
                name=field.name,
                type=field.dataType.simpleString(),
                description="partition column" if field.name in partitioned_by else None,
                constraints=TableColumnConstraints(nullable=field.nullable),
            )
            for field in schema(table).fields
        ]
    )


def definition_metadata(table: Table) -> dict[str, Any]:
    """Definition metadata of the asset stored in `table`."""
    return {
        COLUMN_SCHEMA: MetadataValue.table_schema(column_schema(table)),
        TABLE_NAME: MetadataValue.text(table.value),
    }


def table_rows(
    instance: DagsterInstance, asset_key: AssetKey, spark: SparkSession, write: WriteResult
) -> int:
    """Rows of the whole table as of the run's own commit: a concurrent run's later commit does
    not count.

    When the commit right before ours is the one the asset's latest materialization recorded
    (same table, same run), its row count plus the rows our commit wrote minus the rows it
    replaced (Delta's commit metrics) is exact and needs no Spark job. Otherwise (the first
    write, another writer in between, a run that committed and died before recording) Delta
    counts the rows from the statistics in its log, which builds the table's state at that
    version: a job per table, the dearest metadata read of a run.
    """
    previous = _recorded_rows(instance, asset_key, write)
    if previous is not None and write.rows_removed is not None:
        return previous - write.rows_removed + write.rows
    return spark.read.format("delta").option("versionAsOf", write.version).load(write.path).count()


def _recorded_rows(
    instance: DagsterInstance, asset_key: AssetKey, write: WriteResult
) -> int | None:
    """The table's rows at the commit before `write`, if the asset's latest materialization
    recorded exactly that commit of exactly this table."""
    if write.previous_run_id is None:
        return None
    event = instance.get_latest_materialization_event(asset_key)
    materialization = event.asset_materialization if event is not None else None
    if event is None or materialization is None or event.run_id != write.previous_run_id:
        return None
    metadata = materialization.metadata
    version, rows, uri = (metadata.get(k) for k in ("delta_version", ROW_COUNT, URI))
    if version is None or rows is None or uri is None:
        return None
    if version.value != write.version - 1 or uri.value != write.path:
        return None
    return int(rows.value)  # type: ignore[arg-type]


def materialization_metadata(
    write: WriteResult, table_rows: int, partition_rows: int | None
) -> dict[str, MetadataValue]:
    """Row counts and URI of one materialization. `partition_rows` is None when the event
    stands for several partitions whose own counts are not known apart."""
    metadata: dict[str, MetadataValue] = {
        ROW_COUNT: MetadataValue.int(table_rows),
        URI: MetadataValue.text(write.path),
    }
    if partition_rows is not None:
        metadata[PARTITION_ROW_COUNT] = MetadataValue.int(partition_rows)
    return metadata
