"""Gold: daily revenue per region, the fan-in of all four regions of a date."""

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
from regional_etl.checks import REVENUE_GATES, partition_check_results, revenue_usd
from regional_etl.contract import Table
from regional_etl.partitions import SAME_DATE, daily_partitions, run_dates
from regional_etl.pipeline import run_gold
from regional_etl.policies import SPARK_RETRY_POLICY
from regional_etl.release.pointer import write_paths
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource

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
        session = spark.spark_session
        run = run_gold(
            session,
            write_paths(warehouse),
            run_dates(context),
            context.run.run_id,
            spark.session_for,
        )
        if run.result is not None:
            rows = catalog.table_rows(context.instance, context.asset_key, session, run.result)
            for d, written in run.written.items():
                yield AssetMaterialization(
                    context.asset_key,
                    partition=d,
                    metadata={
                        "orders": MetadataValue.int(sum(v[0] for v in run.expected[d].values())),
                        "revenue_usd": MetadataValue.float(revenue_usd(run.expected[d])),
                        "delta_version": MetadataValue.int(run.result.version),
                        "path": MetadataValue.path(run.result.path),
                        **catalog.materialization_metadata(run.result, rows, len(written)),
                    },
                )
        yield from partition_check_results(context, "daily_revenue", run.verdicts)
        if run.blocked:
            raise Failure(
                description="daily_revenue not materialized for dates with regions that have no "
                f"published orders (quality gate failed or not processed yet): {run.blocked}",
                metadata={"blocked": MetadataValue.json(run.blocked)},
                allow_retries=False,
            )
