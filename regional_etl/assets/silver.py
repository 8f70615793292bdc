"""Silver: valid, deduplicated orders in USD, and every rejected line with its reason.

Write-audit-publish per partition: the quality gates run on the step's own data before anything
is published. A partition that fails a blocking gate is quarantined as a whole: its orders are
not published (its silver partition is emptied, so no reader and no aggregate sees it), its
lines stay in bronze and the failed checks say why. Line-level rejects go to
`orders_quarantine` either way.
"""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetMaterialization,
    AssetSpec,
    BackfillPolicy,
    Failure,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    multi_asset,
)

from regional_etl.checks import (
    ORDERS_GATES,
    QualityGateResource,
    check_outputs,
    evaluations,
    orders_verdicts,
    schema_problems,
)
from regional_etl.contract import Table, schema
from regional_etl.io.delta import (
    daily_predicate,
    read_table,
    regional_predicate,
    replace_partitions,
)
from regional_etl.io.landing import DropNotReadyError, count_lines, ready_drop
from regional_etl.partitions import (
    DATE_DIM,
    DateRegion,
    date_region_partitions,
    run_date_regions,
)
from regional_etl.policies import UPSTREAM_RETRY_POLICY
from regional_etl.resources.spark import SparkResource
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.transforms.gates import PartitionStats, gate_stats
from regional_etl.transforms.orders import classify, convert, quarantine_rows, valid_orders

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
            "date (half-up to the cent). Published only for partitions that pass the blocking "
            "quality gates. Table: `silver/orders` by `order_date`, `region`.",
            # Materialized per partition: a range run publishes only the partitions that pass.
            skippable=True,
        ),
        AssetSpec(
            "orders_quarantine",
            deps=[AssetDep("raw_orders")],
            group_name="silver",
            kinds={"spark", "delta"},
            metadata={"delta_table": Table.ORDERS_QUARANTINE.value},
            description="Every rejected landing line with its reason (malformed, missing_*, "
            "invalid_*, duplicate). Table: `silver/orders_quarantine` by `order_date`, `region`.",
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
    """Parse, validate, deduplicate, convert and gate one (date, region) drop or a range."""
    from pyspark import StorageLevel

    session = spark.spark_session
    partitions = run_date_regions(context)
    dates = sorted({p.order_date for p in partitions})
    bronze = read_table(session, warehouse.table(Table.RAW_ORDERS)).where(
        regional_predicate(partitions)
    )
    fx = read_table(session, warehouse.table(Table.FX_RATES)).where(daily_predicate(dates))
    have_fx = {str(r.order_date) for r in fx.select("order_date").distinct().collect()}
    missing_fx = sorted(set(dates) - have_fx)
    if missing_fx:
        raise Failure(
            description=f"no fx_rates for {', '.join(missing_fx)}: materialize fx_rates first "
            "(retried: an fx_rates run may still be writing them)",
            allow_retries=True,
        )

    # Classification, conversion and the gate numbers all come from one pass over bronze.
    converted = convert(classify(bronze.drop("run_id")), fx).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        stats = _stats_by_partition(converted, partitions, warehouse.landing())
        out = valid_orders(converted, context.run_id)
        problems = schema_problems(out.schema, schema(Table.ORDERS))
        verdicts = {p: orders_verdicts(stats[p], problems, quality_gates) for p in partitions}
        published = [p for p in partitions if not any(v.blocks for v in verdicts[p])]
        blocked = [p for p in partitions if p not in published]

        from pyspark.sql import functions as F

        keep = F.lit(False)
        for p in published:
            keep = keep | ((F.col("order_date") == p.order_date) & (F.col("region") == p.region))
        # The replaced range covers every partition of the run: blocked ones become empty.
        # The dedup window spread each partition's rows over every task: regroup them, or each
        # (date, region) folder gets one small file per task.
        written = replace_partitions(
            out.where(keep),
            warehouse.table(Table.ORDERS),
            Table.ORDERS,
            regional_predicate(partitions),
            context.run_id,
            one_file_per_partition=True,
        )
        quarantined = replace_partitions(
            quarantine_rows(converted, context.run_id),
            warehouse.table(Table.ORDERS_QUARANTINE),
            Table.ORDERS_QUARANTINE,
            regional_predicate(partitions),
            context.run_id,
            one_file_per_partition=True,
        )
    finally:
        converted.unpersist()

    for p in partitions:
        key = str(p)
        s = stats[p]
        yield AssetMaterialization(
            "orders_quarantine",
            partition=key,
            metadata={
                "rows_quarantined": MetadataValue.int(s.quarantined),
                "quarantine_ratio": MetadataValue.float(round(s.quarantine_ratio, 6)),
                "delta_version": MetadataValue.int(quarantined.version),
                "path": MetadataValue.path(quarantined.path),
            },
        )
        if p in published:
            yield AssetMaterialization(
                "orders",
                partition=key,
                metadata={
                    "rows_written": MetadataValue.int(s.orders),
                    "rows_quarantined": MetadataValue.int(s.quarantined),
                    "landing_lines": MetadataValue.int(s.landing_lines),
                    "delta_version": MetadataValue.int(written.version),
                    "path": MetadataValue.path(written.path),
                },
            )
        # After the materialization, so the checks target it (a blocked partition has none).
        yield from evaluations(context, "orders", key, verdicts[p])
    yield from check_outputs(context)
    if blocked:
        failed = {str(p): [v.gate.name for v in verdicts[p] if v.blocks] for p in blocked}
        raise Failure(
            description="quality gate failed, partition quarantined as a whole (not published "
            f"to silver/orders, kept out of daily_revenue): {failed}. Fix the landing drop and "
            "re-materialize the partition.",
            metadata={"blocked": MetadataValue.json(failed)},
            allow_retries=False,
        )


def _stats_by_partition(converted, partitions: list[DateRegion], landing) -> dict:
    """Collect the one-pass gate numbers, and count landing lines outside Spark to reconcile."""
    collected = {
        (str(r["order_date"]), r["region"]): r.asDict() for r in gate_stats(converted).collect()
    }
    result: dict[DateRegion, PartitionStats] = {}
    for p in partitions:
        try:
            landing_lines = count_lines([ready_drop(landing, p)])
        except DropNotReadyError:
            landing_lines = -1  # the drop is being redelivered: cannot reconcile now
        row = collected.get((p.order_date, p.region))
        if row is None:
            result[p] = PartitionStats.empty(landing_lines)
            continue
        del row["order_date"], row["region"]
        result[p] = PartitionStats(**row, landing_lines=landing_lines)
    return result
