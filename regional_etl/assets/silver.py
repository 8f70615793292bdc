"""Silver: valid, deduplicated orders in USD, and every rejected line with its reason."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetSpec,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    multi_asset,
)

from regional_etl.contract import Table
from regional_etl.io.delta import (
    daily_predicate,
    read_table,
    regional_predicate,
    replace_partitions,
)
from regional_etl.partitions import DATE_DIM, date_region_partitions, run_date_regions
from regional_etl.resources.spark import SparkResource
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.transforms.orders import classify, quarantine_rows, valid_orders

# Every region of a date converts with that date's rates: the cross-region dependency.
FX_BY_DATE = MultiToSingleDimensionPartitionMapping(partition_dimension_name=DATE_DIM)


@multi_asset(
    specs=[
        AssetSpec(
            "orders",
            deps=[AssetDep("raw_orders"), AssetDep("fx_rates", partition_mapping=FX_BY_DATE)],
            group_name="silver",
            kinds={"spark", "delta"},
            metadata={"delta_table": Table.ORDERS.value},
            description="Valid, deduplicated orders converted to USD at the ECB rate of their "
            "date (half-up to the cent). Table: `silver/orders` by `order_date`, `region`.",
        ),
        AssetSpec(
            "orders_quarantine",
            deps=[AssetDep("raw_orders")],
            group_name="silver",
            kinds={"spark", "delta"},
            metadata={"delta_table": Table.ORDERS_QUARANTINE.value},
            description="Every rejected landing line with its reason (malformed, missing_*, "
            "invalid_*, duplicate). Table: `silver/orders_quarantine` by `order_date`, `region`.",
        ),
    ],
    partitions_def=date_region_partitions,
    backfill_policy=BackfillPolicy.single_run(),
)
def orders(context: AssetExecutionContext, spark: SparkResource, warehouse: WarehouseResource):
    """Parse, validate, deduplicate and convert one (date, region) drop (or a backfill range)."""
    from pyspark import StorageLevel

    session = spark.spark_session
    partitions = run_date_regions(context)
    dates = sorted({p.order_date for p in partitions})
    bronze = read_table(session, warehouse.table(Table.RAW_ORDERS)).where(
        regional_predicate(partitions)
    )
    fx = read_table(session, warehouse.table(Table.FX_RATES)).where(daily_predicate(dates))
    missing_fx = sorted(set(dates) - {str(r.order_date) for r in fx.select("order_date").collect()})
    if missing_fx:
        raise Failure(
            description=f"no fx_rates for {', '.join(missing_fx)}: materialize fx_rates first",
            allow_retries=False,
        )

    # Both outputs and the counts come from one classification pass over bronze.
    classified = classify(bronze.drop("run_id")).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {
            (str(r.order_date), r.region, r.reason): r["count"]
            for r in classified.groupBy("order_date", "region", "reason").count().collect()
        }
        written = replace_partitions(
            valid_orders(classified, fx, context.run_id),
            warehouse.table(Table.ORDERS),
            Table.ORDERS,
            regional_predicate(partitions),
            context.run_id,
        )
        quarantined = replace_partitions(
            quarantine_rows(classified, context.run_id),
            warehouse.table(Table.ORDERS_QUARANTINE),
            Table.ORDERS_QUARANTINE,
            regional_predicate(partitions),
            context.run_id,
        )
    finally:
        classified.unpersist()

    by_reason: dict[str, int] = {}
    for (_, _, reason), n in counts.items():
        if reason is not None:
            by_reason[reason] = by_reason.get(reason, 0) + n
    empty = [
        str(p) for p in partitions if not any(k[:2] == (p.order_date, p.region) for k in counts)
    ]
    if empty:
        context.log.warning(f"partitions with no landing lines: {', '.join(empty)}")
    yield MaterializeResult(
        asset_key="orders",
        metadata={
            **written.metadata(),
            "rows_quarantined": MetadataValue.int(quarantined.rows),
        },
    )
    yield MaterializeResult(
        asset_key="orders_quarantine",
        metadata={
            **quarantined.metadata(),
            "rows_quarantined": MetadataValue.int(quarantined.rows),
            "by_reason": MetadataValue.json(dict(sorted(by_reason.items()))),
        },
    )
