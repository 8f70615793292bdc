"""The catalog shows the data: every Delta asset carries the contract's column schema, its table,
owners and code references. What its materializations carry (row counts, the table's URI,
numbers the UI plots) is checked on the runs test_pipeline.py already makes, so it costs no run
of its own: its tests call `assert_catalog_metadata` and `assert_daily_revenue_metadata`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterInstance, FloatMetadataValue, IntMetadataValue

from regional_etl import catalog
from regional_etl.contract import CURRENCIES, REGIONS, Table, schema
from regional_etl.definitions import defs
from regional_etl.partitions import parse_date_region
from regional_etl_tests.conftest import Pipeline
from regional_etl_tests.oracle import expected_partition

TABLES = {
    "fx_rates": Table.FX_RATES,
    "raw_orders": Table.RAW_ORDERS,
    "orders": Table.ORDERS,
    "orders_quarantine": Table.ORDERS_QUARANTINE,
    "daily_revenue": Table.DAILY_REVENUE,
}
# Numbers the UI plots per partition: they must be stored as numbers, not text.
PLOTTED = {
    catalog.ROW_COUNT,
    catalog.PARTITION_ROW_COUNT,
    "rows_written",
    "rows_quarantined",
    "quarantine_ratio",
    "landing_lines",
    "delta_version",
}


def test_every_delta_asset_shows_its_contract_schema_owners_and_code() -> None:
    graph = defs.resolve_asset_graph()
    # Every asset but the release diff (a report, not a Delta table) is a table of the contract.
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys - {"release_diff"} == set(TABLES)
    for name, table in TABLES.items():
        node = graph.get(AssetKey(name))
        columns = node.metadata[catalog.COLUMN_SCHEMA].schema.columns
        assert [(c.name, c.type, c.constraints.nullable) for c in columns] == [
            (f.name, f.dataType.simpleString(), f.nullable) for f in schema(table).fields
        ], name
        assert node.metadata[catalog.TABLE_NAME].value == table.value
        assert node.owners == catalog.OWNERS
        [reference] = node.metadata["dagster/code_references"].code_references
        source = Path(reference.file_path).read_text().splitlines()
        assert "asset(" in source[reference.line_number - 1], (name, reference)


def _latest(instance: DagsterInstance, asset: str, partition: str) -> dict[str, Any]:
    """The metadata the UI shows for the partition's latest materialization."""
    event = instance.get_latest_materialization_event(AssetKey(asset))
    assert event is not None and event.asset_materialization is not None, asset
    assert event.asset_materialization.partition == partition, asset
    return dict(event.asset_materialization.metadata)


def assert_catalog_metadata(
    instance: DagsterInstance, pipeline: Pipeline, spark: Any, partition: str
) -> None:
    """The latest materializations of `partition` (date|region, run alone) and of its date's
    fx_rates carry the standard row counts and URI, and plottable numbers stored as numbers."""
    key = parse_date_region(partition)
    want = expected_partition(pipeline.landing, key.order_date, key.region)
    partition_rows = {
        "fx_rates": (key.order_date, len(CURRENCIES)),
        "raw_orders": (partition, want.lines),
        "orders": (partition, len(want.orders)),
        "orders_quarantine": (partition, len(want.quarantine)),
    }
    for asset, (partition_key, rows) in partition_rows.items():
        meta = _latest(instance, asset, partition_key)
        path = pipeline.table(TABLES[asset].value)
        assert meta[catalog.PARTITION_ROW_COUNT].value == rows, asset
        assert meta[catalog.ROW_COUNT].value == spark.read.format("delta").load(path).count()
        assert meta[catalog.URI].value == path
        for name in PLOTTED & set(meta):
            assert isinstance(meta[name], (IntMetadataValue, FloatMetadataValue)), (asset, name)

    silver = _latest(instance, "orders", partition)
    assert silver["rows_written"].value == len(want.orders)
    assert silver["rows_quarantined"].value == len(want.quarantine)
    assert silver["quarantine_ratio"].value == round(len(want.quarantine) / want.lines, 6)
    assert _latest(instance, "raw_orders", partition)["landing_lines"].value == want.lines


def assert_daily_revenue_metadata(
    instance: DagsterInstance, pipeline: Pipeline, spark: Any, dates: list[str]
) -> None:
    """Each date's daily_revenue materialization: one row per region, the table's rows at its
    commit, and orders and revenue stored as numbers."""
    path = pipeline.table(Table.DAILY_REVENUE.value)
    records = instance.fetch_materializations(AssetKey("daily_revenue"), limit=100).records
    latest: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r.storage_id):
        materialization = record.asset_materialization
        assert materialization is not None and materialization.partition is not None
        latest[materialization.partition] = dict(materialization.metadata)
    assert sorted(latest) == sorted(dates)
    for meta in latest.values():
        assert meta[catalog.PARTITION_ROW_COUNT].value == len(REGIONS)
        at_commit = spark.read.format("delta").option("versionAsOf", meta["delta_version"].value)
        assert meta[catalog.ROW_COUNT].value == at_commit.load(path).count()
        assert meta[catalog.URI].value == path
        assert isinstance(meta["orders"], IntMetadataValue)
        assert isinstance(meta["revenue_usd"], FloatMetadataValue)
