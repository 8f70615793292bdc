"""The whole pipeline on real Spark, real Delta tables in tmp_path and a real Dagster instance,
checked row by row against the contract read independently from the landing lines."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize
from pyspark.sql import functions as F

from regional_etl.assets.bronze import raw_orders
from regional_etl.assets.reference import fx_rates
from regional_etl.assets.silver import orders
from regional_etl.backfill import run_backfill
from regional_etl.contract import REGIONS
from regional_etl.definitions import build_definitions
from regional_etl.generate import generate_landing, write_drop
from regional_etl.io.delta import history
from regional_etl.spark.resource import SparkResource
from regional_etl_tests.conftest import TEST_SPARK_CONF, Pipeline
from regional_etl_tests.oracle import assert_warehouse_matches
from regional_etl_tests.test_catalog import (
    assert_catalog_metadata,
    assert_daily_revenue_metadata,
)

DATES = ["2024-03-08", "2024-03-09"]  # a Friday and a Saturday (which uses Friday's rates)


def rows(spark, path: str, where: str = "true") -> list[dict]:
    return [r.asDict() for r in spark.read.format("delta").load(path).where(where).collect()]


@pytest.fixture
def landed(pipeline: Pipeline) -> Pipeline:
    generate_landing(
        pipeline.landing,
        dt.date.fromisoformat(DATES[0]),
        dt.date.fromisoformat(DATES[-1]),
        rows=120,
        seed=11,
        anomalies=True,
    )
    return pipeline


# Test drops are small, so the product evaluates them interpreted; the large backfills of
# production compile. Both must give the contract's rows.
@pytest.mark.parametrize("interpreted_max_rows", [100_000, 0], ids=["interpreted", "compiled"])
def test_full_materialization_matches_the_contract(
    landed: Pipeline, instance: DagsterInstance, spark, interpreted_max_rows: int
) -> None:
    spark_resource = SparkResource(
        session_config=TEST_SPARK_CONF, interpreted_max_rows=interpreted_max_rows
    )
    report = run_backfill(
        build_definitions({**landed.resources, "spark": spark_resource}),
        instance,
        DATES[0],
        DATES[-1],
        landing_root=str(landed.landing),
        progress=lambda _: None,
    )
    assert report.ok, report.outcomes
    assert report.count("succeeded") == len(DATES) * len(REGIONS)

    expected = assert_warehouse_matches(spark, landed.warehouse, landed.landing, DATES, REGIONS)
    for want in expected.values():
        assert {"malformed", "duplicate", "invalid_amount"} <= set(want.reasons)
    # Silver is written one file per (date, region), not one per Spark task: no small files.
    for name in ("silver/orders", "silver/orders_quarantine"):
        files = (
            spark.read.format("delta")
            .load(landed.table(name))
            .select("order_date", "region", F.col("_metadata.file_path").alias("file"))
            .distinct()
            .groupBy("order_date", "region")
            .count()
            .collect()
        )
        assert len(files) == len(DATES) * len(REGIONS)
        assert {r["count"] for r in files} == {1}, (name, files)
    # Each commit says which run wrote it.
    commits = history(spark, landed.table("silver/orders")).collect()
    run_ids = {r.run_id for r in instance.get_runs()}
    assert {h["userMetadata"] for h in commits if h["operation"] == "WRITE"} <= run_ids
    assert_daily_revenue_metadata(instance, landed, spark, DATES)


def test_rematerializing_a_partition_replaces_exactly_it(
    landed: Pipeline, instance: DagsterInstance, spark
) -> None:
    key = f"{DATES[0]}|eu-west"
    materialize([fx_rates], partition_key=DATES[0], resources=landed.resources, instance=instance)
    for other in ("us-east", "eu-west"):
        result = materialize(
            [raw_orders, orders],
            partition_key=f"{DATES[0]}|{other}",
            resources=landed.resources,
            instance=instance,
        )
        assert result.success
    path = landed.table("silver/orders")

    def strip(rs: list[dict]) -> list[tuple]:
        return sorted(tuple(sorted((k, v) for k, v in r.items() if k != "run_id")) for r in rs)

    before = strip(rows(spark, path))
    version = history(spark, path).limit(1).collect()[0]["version"]

    again = materialize(
        [raw_orders, orders], partition_key=key, resources=landed.resources, instance=instance
    )
    assert again.success
    assert strip(rows(spark, path)) == before
    last = history(spark, path).limit(1).collect()[0]
    assert last["version"] > version
    assert last["userMetadata"] == again.run_id
    assert last["operationParameters"]["mode"] == "Overwrite"
    # The other region's rows were not rewritten by that commit.
    us_east_runs = {r["run_id"] for r in rows(spark, path, "region = 'us-east'")}
    assert again.run_id not in us_east_runs

    mats = [
        m for m in again.asset_materializations_for_node("orders") if m.asset_key.path == ["orders"]
    ]
    assert [m.partition for m in mats] == [key]
    meta = mats[0].metadata
    assert meta["rows_written"].value == len(rows(spark, path, "region = 'eu-west'"))
    assert meta["delta_version"].value == last["version"]
    # What the catalog shows of these runs, on the same instance: no extra runs for it.
    assert_catalog_metadata(instance, landed, spark, key)


def test_a_drop_without_success_marker_fails_clearly(pipeline: Pipeline, instance) -> None:
    write_drop(pipeline.landing, DATES[0], "ap-south", ['{"order_id": "x"}'], success=False)
    result = materialize(
        [raw_orders],
        partition_key=f"{DATES[0]}|ap-south",
        resources=pipeline.resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None
    expected_path = pipeline.landing / "region=ap-south" / f"date={DATES[0]}"
    assert str(expected_path) in failure.message
    assert "_SUCCESS" in failure.message
    assert not (pipeline.warehouse / "bronze" / "raw_orders").exists() or not rows(
        pipeline.resources["spark"].spark_session, pipeline.table("bronze/raw_orders")
    )


def test_run_silver_publishes_passing_partitions_and_empties_blocked_ones(spark, tmp_path) -> None:
    """The silver step without Dagster: write-audit-publish on real Delta tables."""
    from regional_etl.checks import QualityGateResource
    from regional_etl.contract import Table, schema
    from regional_etl.io.delta import daily_predicate, replace_partitions
    from regional_etl.io.landing import read_drops, ready_drop
    from regional_etl.partitions import DateRegion
    from regional_etl.pipeline import (
        MissingFXRatesError,
        read_bronze,
        run_gold,
        run_silver,
        write_bronze,
    )
    from regional_etl.resources.warehouse import WarehouseResource

    day = dt.date.fromisoformat(DATES[0])
    warehouse = WarehouseResource(
        landing_root=str(tmp_path / "landing"), warehouse_root=str(tmp_path / "warehouse")
    ).paths()
    generate_landing(warehouse.landing, day, day, rows=40, seed=3, regions=["us-east"])
    small = '{"order_id": "S", "user_id": "u", "amount": 5, "currency": "EUR", '
    small += '"order_ts": "2024-03-08T10:00:00Z"}'
    write_drop(warehouse.landing, DATES[0], "eu-west", [small])
    partitions = [DateRegion(DATES[0], "eu-west"), DateRegion(DATES[0], "us-east")]
    drops = [ready_drop(warehouse.landing, p) for p in partitions]
    lines = read_drops(spark, warehouse.landing, drops)
    assert write_bronze(lines, warehouse, partitions, "run-1").rows == 41
    bronze = read_bronze(spark, warehouse, partitions)
    gates = QualityGateResource(min_rows=10, max_quarantine_ratio=0.5)

    fx_rows = [(day, currency, Decimal("1.1")) for currency in ("EUR", "INR", "USD")]
    fx_path = warehouse.table(Table.FX_RATES)
    fx = spark.createDataFrame(fx_rows, schema(Table.FX_RATES))
    replace_partitions(fx.where("false"), fx_path, Table.FX_RATES, "true", "run-0")
    with pytest.raises(MissingFXRatesError):
        run_silver(bronze, warehouse, partitions, "run-1", gates)
    replace_partitions(fx, fx_path, Table.FX_RATES, daily_predicate(DATES[:1]), "run-1")

    steps: list[str] = []
    run = run_silver(bronze, warehouse, partitions, "run-1", gates, after_step=steps.append)
    assert steps == [
        "fx presence check",
        "classify + convert + cache + gate",
        "write orders",
        "write quarantine",
    ]
    assert run.blocked == [DateRegion(DATES[0], "eu-west")]
    assert run.stats[DateRegion(DATES[0], "eu-west")].orders == 1
    us_east = run.stats[DateRegion(DATES[0], "us-east")]
    assert us_east.landing_lines == us_east.lines == 40
    silver = rows(spark, run.orders.path)
    assert {r["region"] for r in silver} == {"us-east"}
    assert len(silver) == us_east.orders == run.orders.rows
    assert len(rows(spark, run.quarantine.path)) == us_east.quarantined

    # Gold of the date: eu-west was blocked and two regions never landed, so nothing is written
    # and the gate names the missing regions.
    gold = run_gold(spark, warehouse, DATES[:1], "run-2")
    assert gold.result is None and gold.written == {}
    assert gold.blocked == {DATES[0]: ["ap-south", "eu-west", "us-west"]}
    [present] = gold.verdicts[DATES[0]]
    assert not present.passed and present.gate.name == "all_regions_present"
    assert not Path(warehouse.table(Table.DAILY_REVENUE)).exists()


def test_a_bronze_table_of_the_older_contract_gains_the_new_columns(spark, tmp_path) -> None:
    """A warehouse created before bronze had `defect` and `line_bytes` keeps working: the next
    write adds them, and the rows written before read them as null."""
    from regional_etl.io.landing import read_drops, ready_drop
    from regional_etl.partitions import DateRegion
    from regional_etl.pipeline import write_bronze
    from regional_etl.resources.warehouse import WarehouseResource

    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse"
    generate_landing(landing, dt.date(2024, 3, 4), dt.date(2024, 3, 4), rows=5,
                     regions=["us-east", "eu-west"])  # fmt: skip
    path = warehouse / "bronze" / "raw_orders"
    spark.sql(
        f"CREATE TABLE delta.`{path}` (value STRING, source_file STRING NOT NULL, "
        "line_number BIGINT NOT NULL, run_id STRING NOT NULL, order_date DATE NOT NULL, "
        "region STRING NOT NULL) USING delta PARTITIONED BY (order_date, region)"
    )
    spark.sql(
        f"INSERT INTO delta.`{path}` VALUES ('old', 'f', 1, 'old-run', DATE'2024-03-03', 'us-east')"
    )
    resource = WarehouseResource(landing_root=str(landing), warehouse_root=str(warehouse))
    partition = DateRegion("2024-03-04", "us-east")
    drops = [ready_drop(landing, partition)]
    write_bronze(read_drops(spark, landing, drops), resource.paths(), [partition], "new-run")
    table = spark.read.format("delta").load(str(path))
    assert {"defect", "line_bytes"} <= set(table.columns)
    rows = table.collect()
    assert {r["run_id"] for r in rows} == {"old-run", "new-run"}
    assert all(r["defect"] is None and r["line_bytes"] is None for r in rows)
