"""Bronze: every landing line as delivered, one Delta partition per (date, region) drop."""

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from regional_etl import catalog
from regional_etl.contract import Table
from regional_etl.io.landing import (
    DropNotReadyError,
    LandingFileError,
    count_lines,
    read_drops,
    ready_drop,
)
from regional_etl.partitions import date_region_partitions, run_date_regions
from regional_etl.pipeline import write_bronze
from regional_etl.policies import LANDING_RETRY_POLICY
from regional_etl.resources.spark import SparkResource
from regional_etl.resources.warehouse import WarehouseResource


@asset(
    partitions_def=date_region_partitions,
    group_name="bronze",
    backfill_policy=BackfillPolicy.single_run(),
    retry_policy=LANDING_RETRY_POLICY,
    kinds={"spark", "delta"},
    metadata=catalog.definition_metadata(Table.RAW_ORDERS),
    owners=catalog.OWNERS,
)
def raw_orders(
    context: AssetExecutionContext, spark: SparkResource, warehouse: WarehouseResource
) -> MaterializeResult:
    """Every line of a complete landing drop, verbatim, with its file and line number.

    A drop is complete when its `_SUCCESS` marker exists; an incomplete drop fails the run with
    the path and is never half-ingested. Table: `bronze/raw_orders` by `order_date`, `region`.
    Metadata: `landing_lines` and `dagster/partition_row_count` of the partition (a range run
    reports its totals instead: `orders` has each partition's `landing_lines`), the table's
    `dagster/row_count` after the run's commit.
    """
    partitions = run_date_regions(context)
    try:
        drops = [ready_drop(warehouse.landing(), p) for p in partitions]
        # Before Spark reads anything: a file that cannot be ingested fails with its name and
        # line, instead of a Spark error or a partition with lines missing.
        landing_lines = count_lines(drops)
    except (DropNotReadyError, LandingFileError) as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    with spark.connection_errors():
        session = spark.session_for(landing_lines)
        lines = read_drops(session, warehouse.landing(), drops)
        result = write_bronze(lines, warehouse, partitions, context.run_id)
        table_rows = catalog.table_rows(session, result)
    if result.rows != landing_lines:
        # Cannot happen unless the reader and the contract disagree on what a line is.
        raise Failure(
            description=f"bronze wrote {result.rows} rows for {landing_lines} landing lines "
            f"in {', '.join(str(d.path) for d in drops)}",
            allow_retries=False,
        )
    return MaterializeResult(
        metadata={
            **result.metadata(),
            # One event stands for every partition of a range run: a per-partition count only
            # when there is one.
            **catalog.materialization_metadata(
                result, table_rows, result.rows if len(partitions) == 1 else None
            ),
            "landing_lines": MetadataValue.int(landing_lines),
            "landing_files": MetadataValue.int(sum(len(d.files) for d in drops)),
            "partitions": MetadataValue.int(len(partitions)),
        }
    )
