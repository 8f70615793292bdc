"""Silver: valid, deduplicated orders in USD, and every rejected line with its reason."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetMaterialization,
    AssetSpec,
    BackfillPolicy,
    Failure,
    MetadataValue,
    multi_asset,
)

from regional_etl import catalog
from regional_etl.checks import (
    ORDERS_GATES,
    QualityGateResource,
    partition_check_results,
    step_asset_key,
)
from regional_etl.contract import Table
from regional_etl.partitions import SAME_DATE, date_region_partitions, run_date_regions
from regional_etl.pipeline import MissingFXRatesError, read_bronze, run_silver
from regional_etl.policies import UPSTREAM_RETRY_POLICY
from regional_etl.release.pointer import write_paths
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource


@multi_asset(
    specs=[
        AssetSpec(
            "orders",
            deps=[AssetDep("raw_orders"), AssetDep("fx_rates", partition_mapping=SAME_DATE)],
            group_name="silver",
            kinds={"spark", "delta"},
            metadata=catalog.definition_metadata(Table.ORDERS),
            owners=catalog.OWNERS,
            description="Valid, deduplicated orders converted to USD at the ECB rate of their "
            "date (half-up to the cent). Published only for partitions that pass the blocking "
            "quality gates. Table: `silver/orders` by `order_date`, `region`. Plotted per "
            "partition: `rows_written` (its orders), `rows_quarantined`, `quarantine_ratio` "
            "(quarantined share of the landing lines), `landing_lines`.",
            # Materialized per partition: a range run publishes only the partitions that pass.
            skippable=True,
        ),
        AssetSpec(
            "orders_quarantine",
            deps=[AssetDep("raw_orders")],
            group_name="silver",
            kinds={"spark", "delta"},
            metadata=catalog.definition_metadata(Table.ORDERS_QUARANTINE),
            owners=catalog.OWNERS,
            description="Every rejected landing line with its reason (malformed, missing_*, "
            "invalid_*, duplicate). Table: `silver/orders_quarantine` by `order_date`, `region`. "
            "Plotted per partition: `rows_quarantined` and `quarantine_ratio`; the reasons are "
            "in the table's `reason` column.",
            skippable=True,
        ),
    ],
    check_specs=[g.spec("orders", date_region_partitions) for g in ORDERS_GATES.values()],
    partitions_def=date_region_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    retry_policy=UPSTREAM_RETRY_POLICY,
)
def orders(
    context: AssetExecutionContext,
    spark: SparkResource,
    warehouse: WarehouseResource,
    quality_gates: QualityGateResource,
):
    """Parse, validate, deduplicate, convert and gate one (date, region) drop or a range.

    Write-audit-publish per partition: a partition that fails a blocking gate is not published
    (its silver partition is emptied) and the failed checks say why; its line-level rejects go to
    `orders_quarantine` either way.
    """
    partitions = run_date_regions(context)
    try:
        with spark.connection_errors():
            paths = write_paths(warehouse)
            bronze = read_bronze(spark.spark_session, paths, partitions)
            # The session's evaluation mode follows the size of the step: its landing lines,
            # which the reconciliation gate counts anyway.
            run = run_silver(
                bronze,
                paths,
                partitions,
                context.run.run_id,
                quality_gates,
                sized=spark.session_for,
            )
            session = spark.spark_session
            orders_rows = catalog.table_rows(
                context.instance, step_asset_key(context, "orders"), session, run.orders
            )
            quarantine_rows = catalog.table_rows(
                context.instance,
                step_asset_key(context, "orders_quarantine"),
                session,
                run.quarantine,
            )
    except MissingFXRatesError as exc:
        raise Failure(
            description=f"{exc}: materialize fx_rates first "
            "(retried: an fx_rates run may still be writing them)",
            allow_retries=True,
        ) from exc

    for p in partitions:
        s = run.stats[p]
        yield AssetMaterialization(
            step_asset_key(context, "orders_quarantine"),
            partition=str(p),
            metadata={
                "rows_quarantined": MetadataValue.int(s.quarantined),
                "quarantine_ratio": MetadataValue.float(round(s.quarantine_ratio, 6)),
                "delta_version": MetadataValue.int(run.quarantine.version),
                "path": MetadataValue.path(run.quarantine.path),
                **catalog.materialization_metadata(run.quarantine, quarantine_rows, s.quarantined),
            },
        )
        if p not in run.blocked:
            yield AssetMaterialization(
                step_asset_key(context, "orders"),
                partition=str(p),
                metadata={
                    "rows_written": MetadataValue.int(s.orders),
                    "rows_quarantined": MetadataValue.int(s.quarantined),
                    "landing_lines": MetadataValue.int(s.landing_lines),
                    "quarantine_ratio": MetadataValue.float(round(s.quarantine_ratio, 6)),
                    "delta_version": MetadataValue.int(run.orders.version),
                    "path": MetadataValue.path(run.orders.path),
                    **catalog.materialization_metadata(run.orders, orders_rows, s.orders),
                },
            )
    yield from partition_check_results(
        context, "orders", {str(p): run.verdicts[p] for p in partitions}
    )
    if run.blocked:
        failed = {str(p): [v.gate.name for v in run.verdicts[p] if v.blocks] for p in run.blocked}
        raise Failure(
            description="quality gate failed, partition quarantined as a whole (not published "
            f"to silver/orders, kept out of daily_revenue): {failed}. Fix the landing drop and "
            "re-materialize the partition.",
            metadata={"blocked": MetadataValue.json(failed)},
            allow_retries=False,
        )
