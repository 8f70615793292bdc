"""Bronze: every landing line as delivered, one Delta partition per (date, region) drop."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetMaterialization,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from regional_etl import catalog
from regional_etl.contract import Table
from regional_etl.io.delta import WriteResult
from regional_etl.io.landing import (
    DropNotReadyError,
    DropScan,
    LandingFileError,
    read_drops,
    ready_drop,
    scan_drop,
)
from regional_etl.partitions import SAME_DATE, DateRegion, date_region_partitions, run_date_regions
from regional_etl.pipeline import write_bronze
from regional_etl.policies import LANDING_RETRY_POLICY
from regional_etl.release.pointer import write_paths
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource

# The most drops one backfill run ingests (100 days of four regions). Besides bounding a run,
# a backfill policy of its own keeps bronze in runs of its own: Dagster puts an asset in its
# parent's run only when both have the same policy, and a drop that cannot be read fails the
# bronze step, which would skip silver of every other drop of a shared run.
MAX_DROPS_PER_RUN = 400


@asset(
    partitions_def=date_region_partitions,
    # Not read: a date's pipeline starts at its FX rates, so the whole pipeline has one root
    # (daily) and the UI's "Materialize all" offers a date range for all of it in one launch.
    deps=[AssetDep("fx_rates", partition_mapping=SAME_DATE)],
    group_name="bronze",
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=MAX_DROPS_PER_RUN),
    retry_policy=LANDING_RETRY_POLICY,
    kinds={"spark", "delta"},
    metadata=catalog.definition_metadata(Table.RAW_ORDERS),
    owners=catalog.OWNERS,
    output_required=False,
)
def raw_orders(context: AssetExecutionContext, spark: SparkResource, warehouse: WarehouseResource):
    """Every line of a complete landing drop, with its file and line number.

    A drop is complete when its `_SUCCESS` marker exists; an incomplete drop is never
    half-ingested. A line that is not UTF-8 or is over the line limit is kept as far as it can
    be (decoded with replacement characters, or cut to a prefix, with its `defect` and
    `line_bytes`) and quarantined by silver. A drop that is not complete or has a file that
    cannot be read fails its own partition, named with the path; in a range run every other
    drop is still published. Table: `bronze/raw_orders` by `order_date`, `region`. Metadata:
    `landing_lines`, `line_defects`, `dagster/partition_row_count` (per partition; a range run
    in which every drop is ingested reports its totals), and the table's `dagster/row_count`
    after the run's commit.
    """
    scans: dict[DateRegion, DropScan] = {}
    failed: dict[str, str] = {}
    for partition in run_date_regions(context):
        try:
            scans[partition] = scan_drop(ready_drop(warehouse.landing(), partition))
        except (DropNotReadyError, LandingFileError) as exc:
            failed[str(partition)] = str(exc)
    if not failed:
        # The step's output: silver in the same run waits for it. A range run reports its
        # totals once for all its partitions.
        result, table_rows = _ingest(context, spark, warehouse, scans)
        one = next(iter(scans.values())) if len(scans) == 1 else None
        yield MaterializeResult(
            metadata={
                **result.metadata(),
                **catalog.materialization_metadata(result, table_rows, one.lines if one else None),
                **_landing_metadata(list(scans.values())),
                "partitions": MetadataValue.int(len(scans)),
            }
        )
        return
    if scans:
        # Each published drop its own event, so only the failed ones show as failed.
        result, table_rows = _ingest(context, spark, warehouse, scans)
        for partition, scan in sorted(scans.items()):
            yield AssetMaterialization(
                context.asset_key,
                partition=str(partition),
                metadata={
                    **result.metadata(),
                    "rows_written": MetadataValue.int(scan.lines),
                    **catalog.materialization_metadata(result, table_rows, scan.lines),
                    **_landing_metadata([scan]),
                },
            )
    reasons = "; ".join(f"{p}: {why}" for p, why in failed.items())
    raise Failure(
        description=reasons
        if not scans
        else f"{len(failed)} of {len(failed) + len(scans)} drops not ingested (the others are "
        f"published): {reasons}",
        metadata={"failed_partitions": MetadataValue.json(failed)},
        allow_retries=False,
    )


def _ingest(
    context: AssetExecutionContext,
    spark: SparkResource,
    warehouse: WarehouseResource,
    scans: dict[DateRegion, DropScan],
) -> tuple[WriteResult, int]:
    """Write the scanned drops to bronze in one commit: the commit and the table's rows."""
    landing_lines = sum(s.lines for s in scans.values())
    with spark.connection_errors():
        session = spark.session_for(landing_lines)
        lines = read_drops(
            session,
            warehouse.landing(),
            [s.drop for s in scans.values()],
            [d for s in scans.values() for d in s.defects],
        )
        result = write_bronze(lines, write_paths(warehouse), sorted(scans), context.run.run_id)
        table_rows = catalog.table_rows(context.instance, context.asset_key, session, result)
    if result.rows != landing_lines:
        # Cannot happen unless the reader and the contract disagree on what a line is.
        raise Failure(
            description=f"bronze wrote {result.rows} rows for {landing_lines} landing lines "
            f"in {', '.join(str(s.drop.path) for s in scans.values())}",
            allow_retries=False,
        )
    return result, table_rows


def _landing_metadata(scans: list[DropScan]) -> dict[str, MetadataValue]:
    return {
        "landing_lines": MetadataValue.int(sum(s.lines for s in scans)),
        "landing_files": MetadataValue.int(sum(len(s.drop.files) for s in scans)),
        "line_defects": MetadataValue.int(sum(len(s.defects) for s in scans)),
    }
