"""Gold: daily revenue per region, the fan-in of all four regions of a date."""

from decimal import Decimal

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetMaterialization,
    AutomationCondition,
    BackfillPolicy,
    Failure,
    MetadataValue,
    asset,
)

from regional_etl import catalog
from regional_etl.checks import REVENUE_GATES, Verdict, partition_check_results
from regional_etl.contract import REGIONS, Table, schema
from regional_etl.io.delta import (
    daily_predicate,
    read_pinned,
    read_table,
    replace_partitions,
)
from regional_etl.partitions import SAME_DATE, daily_partitions, run_dates
from regional_etl.policies import SPARK_RETRY_POLICY
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource
from regional_etl.transforms.revenue import daily_revenue as aggregate_revenue

# When automation requests a date: after any region of it is re-materialized, history included
# (`eager()` alone looks only at the latest time window), and only once every region of the date
# is in and passed its blocking gates. The asset itself refuses a date with a region missing,
# whoever launches it.
_READY = (
    ~AutomationCondition.any_deps_missing()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
)
# `eager()` misses one order of events: the date requested, its run over, then a region
# re-materialized, all between two evaluations (30 s apart under the daemon). Its trigger (a
# dependency updated) and its reset (the date requested or updated) are then both true, and
# `since` keeps the later of the two only when both carry timestamps; its OR conditions carry
# none, so the reset wins and gold stays stale. Right after a request, the timed conditions
# alone decide: a dependency updated after the request asks for the date again.
_UPDATED_AFTER_ITS_REQUEST = (
    AutomationCondition.newly_requested()
    & AutomationCondition.any_deps_match(AutomationCondition.newly_updated()).since(
        AutomationCondition.newly_requested()
    )
)
DAILY_REVENUE_CONDITION = (
    (
        AutomationCondition.eager().without(AutomationCondition.in_latest_time_window())
        | (_UPDATED_AFTER_ITS_REQUEST & _READY)
    )
    & AutomationCondition.all_deps_blocking_checks_passed()
).with_label("all regions of the date updated and gated")


@asset(
    partitions_def=daily_partitions,
    deps=[AssetDep("orders", partition_mapping=SAME_DATE)],
    group_name="gold",
    backfill_policy=BackfillPolicy.single_run(),
    kinds={"spark", "delta"},
    metadata=catalog.definition_metadata(Table.DAILY_REVENUE),
    owners=catalog.OWNERS,
    check_specs=[g.spec("daily_revenue", daily_partitions) for g in REVENUE_GATES.values()],
    output_required=False,
    automation_condition=DAILY_REVENUE_CONDITION,
    retry_policy=SPARK_RETRY_POLICY,
)
def daily_revenue(
    context: AssetExecutionContext, spark: SparkResource, warehouse: WarehouseResource
):
    """Orders, distinct users and USD revenue per region and date, from `silver/orders`.

    A date is aggregated only when all four regions have published orders: a region whose
    quality gate failed (its silver partition is empty) or that was never processed blocks its
    date, and only its date. Table: `gold/daily_revenue` by `order_date`, one row per region.
    Plotted per date: `orders` and `revenue_usd` (all regions).
    """
    # A lost Spark server fails the step with a message that says so; the retry reconnects.
    with spark.connection_errors():
        dates = run_dates(context)
        # One silver version for the count and the aggregation, whatever other runs commit.
        orders = read_pinned(spark.spark_session, warehouse.table(Table.ORDERS)).where(
            daily_predicate(dates)
        )
        # The count reads no column (Parquet footers only).
        session = spark.session_for(orders.count())
        # One aggregation; the result is tiny (four rows a date), so it is collected and reused for
        # the write and for the totals check instead of being recomputed.
        expected = aggregate_revenue(orders).collect()
        expected_by_date = _by_date_and_region(expected, dates)
        complete = [d for d in dates if set(expected_by_date[d]) == set(REGIONS)]
        blocked = {
            d: sorted(set(REGIONS) - set(expected_by_date[d])) for d in dates if d not in complete
        }

        written_by_date = _by_date_and_region([], complete)
        if complete:
            rows = [r for r in expected if str(r["order_date"]) in complete]
            frame = session.createDataFrame(rows, schema(Table.DAILY_REVENUE)).coalesce(1)
            result = replace_partitions(
                frame,
                warehouse.table(Table.DAILY_REVENUE),
                Table.DAILY_REVENUE,
                daily_predicate(complete),
                context.run.run_id,
            )
            # Its own commit: a concurrent run of the same dates may have committed since.
            written = (
                read_table(session, result.path, result.version)
                .where(daily_predicate(complete))
                .collect()
            )
            written_by_date = _by_date_and_region(written, complete)
            table_rows = catalog.table_rows(context.instance, context.asset_key, session, result)
            for d in complete:
                yield AssetMaterialization(
                    context.asset_key,
                    partition=d,
                    metadata={
                        "orders": MetadataValue.int(
                            sum(v[0] for v in expected_by_date[d].values())
                        ),
                        "revenue_usd": MetadataValue.float(float(_revenue(expected_by_date[d]))),
                        "delta_version": MetadataValue.int(result.version),
                        "path": MetadataValue.path(result.path),
                        **catalog.materialization_metadata(
                            result, table_rows, len(written_by_date[d])
                        ),
                    },
                )

        gates = REVENUE_GATES
        verdicts: dict[str, list[Verdict]] = {}
        for d in dates:
            missing = blocked.get(d, [])
            verdicts[d] = [
                Verdict(
                    gates["all_regions_present"],
                    not missing,
                    {
                        "missing_regions": MetadataValue.json(missing),
                        "regions": len(expected_by_date[d]),
                    },
                )
            ]
            if d in complete:
                written_d, expected_d = written_by_date[d], expected_by_date[d]
                diffs = {
                    region: {"gold": str(written_d.get(region)), "orders": str(want)}
                    for region, want in expected_d.items()
                    if written_d.get(region) != want
                }
                verdicts[d].append(
                    Verdict(
                        gates["totals_match_orders"],
                        not diffs and len(written_d) == len(REGIONS),
                        {
                            "differences": MetadataValue.json(diffs),
                            "revenue_usd": float(_revenue(expected_d)),
                        },
                    )
                )
        yield from partition_check_results(context, "daily_revenue", verdicts)
        if blocked:
            raise Failure(
                description="daily_revenue not materialized for dates with regions that have no "
                f"published orders (quality gate failed or not processed yet): {blocked}",
                metadata={"blocked": MetadataValue.json(blocked)},
                allow_retries=False,
            )


def _by_date_and_region(rows: list, dates: list[str]) -> dict[str, dict[str, tuple]]:
    """(orders, users, revenue_usd) by date, then region, of daily_revenue rows."""
    by_date: dict[str, dict[str, tuple]] = {d: {} for d in dates}
    for r in rows:
        by_date[str(r["order_date"])][r["region"]] = (r["orders"], r["users"], r["revenue_usd"])
    return by_date


def _revenue(by_region: dict[str, tuple]) -> Decimal | int:
    return sum((v[2] for v in by_region.values()), start=0)
