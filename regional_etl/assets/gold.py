"""Gold: daily revenue per region, the fan-in of all four regions of a date."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    asset,
)

from regional_etl.contract import Table
from regional_etl.io.delta import daily_predicate, read_table, replace_partitions
from regional_etl.partitions import DATE_DIM, daily_partitions, run_dates
from regional_etl.resources.spark import SparkResource
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.transforms.revenue import daily_revenue as aggregate_revenue

ALL_REGIONS_OF_DATE = MultiToSingleDimensionPartitionMapping(partition_dimension_name=DATE_DIM)


@asset(
    partitions_def=daily_partitions,
    deps=[AssetDep("orders", partition_mapping=ALL_REGIONS_OF_DATE)],
    group_name="gold",
    backfill_policy=BackfillPolicy.single_run(),
    kinds={"spark", "delta"},
    metadata={"delta_table": Table.DAILY_REVENUE.value},
)
def daily_revenue(
    context: AssetExecutionContext, spark: SparkResource, warehouse: WarehouseResource
) -> MaterializeResult:
    """Orders, distinct users and USD revenue per region and date, from `silver/orders`.

    Table: `gold/daily_revenue` by `order_date`, one row per region per date.
    """
    dates = run_dates(context)
    orders = read_table(spark.spark_session, warehouse.table(Table.ORDERS)).where(
        daily_predicate(dates)
    )
    revenue = aggregate_revenue(orders).coalesce(1)
    result = replace_partitions(
        revenue,
        warehouse.table(Table.DAILY_REVENUE),
        Table.DAILY_REVENUE,
        daily_predicate(dates),
        context.run_id,
    )
    return MaterializeResult(metadata={**result.metadata(), "dates": MetadataValue.int(len(dates))})
