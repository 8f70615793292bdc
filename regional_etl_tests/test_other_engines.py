"""Tables other engines can read: delta-rs (the `deltalake` package) reads every table the
pipeline writes, with the same rows as Spark, including timestamps far from today."""

from __future__ import annotations

import json

from dagster import DagsterInstance, materialize
from deltalake import DeltaTable

from regional_etl.assets.bronze import raw_orders
from regional_etl.assets.reference import fx_rates
from regional_etl.assets.silver import orders
from regional_etl.generate import write_drop
from regional_etl_tests.conftest import Pipeline

DATE = "2024-03-04"
# Valid by the contract, and past what a nanosecond timestamp holds (2262): INT96 Parquet
# timestamps make pyarrow overflow on it, TIMESTAMP_MICROS does not.
FAR_FUTURE = "9999-12-31T23:59:59+00:00"


def test_delta_rs_reads_every_table_as_spark_does(
    pipeline: Pipeline, instance: DagsterInstance, spark
) -> None:
    lines = [
        json.dumps(
            {
                "order_id": f"E{n}",
                "user_id": f"u{n % 3}",
                "amount": f"{10 + n}.50",
                "currency": "EUR",
                "order_ts": FAR_FUTURE if n == 0 else f"{DATE}T10:{n:02d}:00+00:00",
            }
        )
        for n in range(12)
    ]
    write_drop(pipeline.landing, DATE, "eu-west", [*lines, "{not json"])
    res = pipeline.resources
    assert materialize([fx_rates], partition_key=DATE, resources=res, instance=instance).success
    assert materialize(
        [raw_orders, orders], partition_key=f"{DATE}|eu-west", resources=res, instance=instance
    ).success

    for table in ("bronze/raw_orders", "silver/orders", "silver/orders_quarantine"):
        path = pipeline.table(table)
        by_spark = [r.asDict() for r in spark.read.format("delta").load(path).collect()]
        by_rust = DeltaTable(path).to_pyarrow_table().to_pylist()
        assert len(by_rust) == len(by_spark) > 0, table
        if table == "silver/orders":
            rust_ts = {r["order_id"]: r["order_ts"] for r in by_rust}
            assert rust_ts["E0"].year == 9999 and rust_ts["E0"].month == 12, rust_ts["E0"]
            spark_ts = {r["order_id"]: r["order_ts"] for r in by_spark}
            assert rust_ts.keys() == spark_ts.keys()
            assert spark_ts["E0"].year == 9999
            assert sorted(r["amount_usd"] for r in by_rust) == sorted(
                r["amount_usd"] for r in by_spark
            )
