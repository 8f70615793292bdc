"""Gold: daily revenue per region, the fan-in of all four regions of a date."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetMaterialization,
    BackfillPolicy,
    Failure,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    asset,
)

from regional_etl.automation.conditions import DAILY_REVENUE_CONDITION
from regional_etl.checks import REVENUE_GATES, Verdict, check_outputs, evaluations
from regional_etl.contract import REGIONS, Table, schema
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
    check_specs=[g.spec("daily_revenue", daily_partitions) for g in REVENUE_GATES.values()],
    output_required=False,
    automation_condition=DAILY_REVENUE_CONDITION,
)
def daily_revenue(
    context: AssetExecutionContext, spark: SparkResource, warehouse: WarehouseResource
):
    """Orders, distinct users and USD revenue per region and date, from `silver/orders`.

    A date is aggregated only when all four regions have published orders: a region whose
    quality gate failed (its silver partition is empty) or that was never processed blocks its
    date, and only its date. Table: `gold/daily_revenue` by `order_date`, one row per region.
    """
    session = spark.spark_session
    dates = run_dates(context)
    orders = read_table(session, warehouse.table(Table.ORDERS)).where(daily_predicate(dates))
    # One aggregation; the result is tiny (four rows a date), so it is collected and reused for
    # the write and for the totals check instead of being recomputed.
    expected = aggregate_revenue(orders).collect()
    by_date: dict[str, dict[str, tuple]] = {d: {} for d in dates}
    for r in expected:
        by_date[str(r["order_date"])][r["region"]] = (r["orders"], r["users"], r["revenue_usd"])
    complete = [d for d in dates if set(by_date[d]) == set(REGIONS)]
    blocked = {d: sorted(set(REGIONS) - set(by_date[d])) for d in dates if d not in complete}

    result = None
    if complete:
        rows = [r for r in expected if str(r["order_date"]) in complete]
        frame = session.createDataFrame(rows, schema(Table.DAILY_REVENUE)).coalesce(1)
        result = replace_partitions(
            frame,
            warehouse.table(Table.DAILY_REVENUE),
            Table.DAILY_REVENUE,
            daily_predicate(complete),
            context.run_id,
        )
        written = read_table(session, result.path).where(daily_predicate(complete)).collect()
    else:
        written = []
    got: dict[str, dict[str, tuple]] = {d: {} for d in complete}
    for r in written:
        got[str(r["order_date"])][r["region"]] = (r["orders"], r["users"], r["revenue_usd"])

    gates = REVENUE_GATES
    for d in dates:
        missing = blocked.get(d, [])
        verdicts = [
            Verdict(
                gates["all_regions_present"],
                not missing,
                {"missing_regions": MetadataValue.json(missing), "regions": len(by_date[d])},
            )
        ]
        if d in complete:
            diffs = {
                region: {"gold": str(got[d].get(region)), "orders": str(want)}
                for region, want in by_date[d].items()
                if got[d].get(region) != want
            }
            total = sum((v[2] for v in by_date[d].values()), start=0)
            verdicts.append(
                Verdict(
                    gates["totals_match_orders"],
                    not diffs and len(got[d]) == len(REGIONS),
                    {"differences": MetadataValue.json(diffs), "revenue_usd": float(total)},
                )
            )
        if d in complete and result is not None:
            yield AssetMaterialization(
                "daily_revenue",
                partition=d,
                metadata={
                    "orders": MetadataValue.int(sum(v[0] for v in by_date[d].values())),
                    "revenue_usd": MetadataValue.float(float(total)),
                    "delta_version": MetadataValue.int(result.version),
                    "path": MetadataValue.path(result.path),
                },
            )
        yield from evaluations(context, "daily_revenue", d, verdicts)
    yield from check_outputs(context)
    if blocked:
        raise Failure(
            description="daily_revenue not materialized for dates with regions that have no "
            f"published orders (quality gate failed or not processed yet): {blocked}",
            metadata={"blocked": MetadataValue.json(blocked)},
            allow_retries=False,
        )
