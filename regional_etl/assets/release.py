"""Release: the diff of this location's namespace against the live one, and the promotion and
rollback jobs that a user launches from the UI with that diff on the asset's page."""

from dataclasses import asdict

from dagster import (
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    Output,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    job,
    op,
)
from pydantic import Field

from regional_etl import catalog, release
from regional_etl.partitions import date_range
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource

USER_TAG = "dagster/user"


class ReleaseRange(Config):
    """The dates a release rebuilt: the diff and the gates cover exactly these."""

    start: str = Field(description="First date of the release, YYYY-MM-DD.")
    end: str = Field(description="Last date of the release, YYYY-MM-DD.")


@asset(group_name="release", kinds={"spark"}, owners=catalog.OWNERS)
def release_diff(
    context: AssetExecutionContext,
    config: ReleaseRange,
    spark: SparkResource,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    """The data diff of this location's namespace against the live one over a date range: per
    table and (date, region) rows, keys only on one side, keys whose values differ (per
    column), and the revenue difference per (date, region), with the verdict a promotion would
    reach now. Also written as `_release_diff.json` in the namespace; `promote_release`
    promotes what it describes."""
    try:
        dates = date_range(config.start, config.end, names=("config start", "config end"))
    except ValueError as exc:
        raise Failure(description=f"release_diff: {exc}", allow_retries=False) from None
    if release.live(warehouse).namespace == warehouse.slot:
        raise Failure(
            description=f"{warehouse.slot} is live: diff a release from its own location",
            allow_retries=False,
        )
    with spark.connection_errors():
        diff = release.compute_diff(
            spark.spark_session, warehouse, warehouse.slot, dates, context.run.run_id
        )
    path = release.write_report(warehouse, diff)
    thresholds = release.ReleaseThresholds.from_settings()
    seed = release.read_seed(warehouse, warehouse.slot)
    refusals = [
        *release.live_moves(warehouse, seed, diff),
        *release.gate_failures(context.instance, dates, seed),
        *thresholds.violations(diff),
    ]
    verdict = (
        "**Promotable**: gates passed, within thresholds, no live change hidden."
        if not refusals
        else "**Not promotable**:\n" + "\n".join(f"- {r}" for r in refusals)
    )
    return MaterializeResult(
        metadata={
            "summary": MetadataValue.md(f"{verdict}\n\n{diff.markdown()}"),
            "diff": _diff_table(diff),
            "revenue_diff": _revenue_table(diff),
            "changed_orders": MetadataValue.int(diff.changed_orders),
            "max_revenue_diff_usd": MetadataValue.float(
                float(max(diff.revenue_diff_by_date().values(), default=0))
            ),
            "promotable": MetadataValue.bool(not refusals),
            "refusals": MetadataValue.json(refusals),
            "live": MetadataValue.text(diff.live),
            "thresholds": MetadataValue.json(asdict(thresholds)),
            "report": MetadataValue.path(str(path)),
        }
    )


def _diff_table(diff: release.ReleaseDiff) -> MetadataValue:
    counts = ["live_rows", "release_rows", "only_live", "only_release", "changed"]
    columns = [
        TableColumn("table", "string"),
        TableColumn("order_date", "string"),
        TableColumn("region", "string"),
        *[TableColumn(c, "int") for c in counts],
        TableColumn("changed_columns", "string"),
    ]
    records = [
        TableRecord(
            {
                "table": r["table"],
                "order_date": r["order_date"],
                "region": r["region"] or "",
                **{c: r[c] for c in counts},
                "changed_columns": ", ".join(
                    f"{c} ({n})" for c, n in sorted(r["changed_columns"].items())
                ),
            }
        )
        for r in diff.tables
    ]
    return MetadataValue.table(records, TableSchema(columns))


def _revenue_table(diff: release.ReleaseDiff) -> MetadataValue:
    names = ["order_date", "region", "live_usd", "release_usd", "diff_usd"]
    columns = [
        TableColumn(n, "string" if n in ("order_date", "region") else "float") for n in names
    ]
    records = [
        TableRecord({n: (r[n] if n in ("order_date", "region") else float(r[n])) for n in names})
        for r in diff.revenue
    ]
    return MetadataValue.table(records, TableSchema(columns))


@op
def seed(
    context: OpExecutionContext, spark: SparkResource, warehouse: WarehouseResource
) -> Output[None]:
    """Start a release: every table of this location's namespace is replaced by a copy of the
    live one at its current Delta version (recorded), so the release only has to rebuild its
    range. Refused when this namespace is live."""
    try:
        with spark.connection_errors():
            started = release.seed(spark.spark_session, warehouse, context.run.run_id)
    except release.ReleaseRefused as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    context.log.info(f"{warehouse.slot} starts from {started.live} at {started.live_versions}")
    return Output(
        None,
        metadata={
            "live": MetadataValue.text(started.live),
            "live_versions": MetadataValue.json(started.live_versions),
            "versions": MetadataValue.json(started.versions),
        },
    )


@op
def catch_up(
    context: OpExecutionContext, spark: SparkResource, warehouse: WarehouseResource
) -> Output[None]:
    """Copy again into this location's namespace the live partitions outside the range of its
    latest diff that changed since the seed (a date the live location loaded meanwhile, a late
    drop of an old date), at the live tables' current versions. Partitions inside the range
    that changed in the live namespace are listed: only a rebuild in this location brings them
    in. Then materialize release_diff again."""
    try:
        with spark.connection_errors():
            found = release.catch_up(spark.spark_session, warehouse, context.run.run_id)
    except release.ReleaseRefused as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc

    def listed(by_table: dict) -> dict[str, list[str]]:
        return {t: sorted(map(str, ps)) for t, ps in sorted(by_table.items())}

    if found.inside:
        context.log.warning(
            "changed in the live namespace inside the release range, to rebuild in "
            f"{warehouse.slot}: {listed(found.inside)}"
        )
    return Output(
        None,
        metadata={
            "copied": MetadataValue.json(listed(found.outside)),
            "to_rebuild": MetadataValue.json(listed(found.inside)),
        },
    )


@op
def promote(
    context: OpExecutionContext, spark: SparkResource, warehouse: WarehouseResource
) -> Output[None]:
    """Switch readers to this location's namespace in one step: refused unless its latest
    release_diff still describes its tables, every blocking gate of the range passed, the diff
    is within the deployment's thresholds (REGIONAL_ETL_RELEASE_MAX_CHANGED_ORDERS and
    REGIONAL_ETL_RELEASE_MAX_REVENUE_DIFF_USD, read now: no run config loosens them), and no
    live partition changed since the seed or the diff that the release does not hold."""
    try:
        with spark.connection_errors():
            entry = release.promote(
                spark.spark_session,
                warehouse,
                release.ReleaseThresholds.from_settings(),
                context.instance,
                context.run.run_id,
                context.job_name,
                context.run.tags.get(USER_TAG),
            )
    except release.ReleaseRefused as exc:
        raise Failure(
            description=str(exc),
            metadata={"reasons": MetadataValue.json(exc.reasons)},
            allow_retries=False,
        ) from exc
    context.log.info(f"readers now see {entry['to']} (was {entry['from']})")
    return Output(None, metadata={"switch": MetadataValue.json(entry)})


@op
def rollback(context: OpExecutionContext, warehouse: WarehouseResource) -> Output[None]:
    """Switch readers back to the namespace that was live before the last promotion."""
    try:
        entry = release.rollback(
            warehouse, context.run.run_id, context.job_name, context.run.tags.get(USER_TAG)
        )
    except release.ReleaseRefused as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    context.log.info(f"readers now see {entry['to']} (was {entry['from']})")
    return Output(None, metadata={"switch": MetadataValue.json(entry)})


@job(description="Start this location's release from a copy of the live tables.")
def start_release() -> None:
    seed()


@job(
    description="Copy again the live partitions outside the release range that changed since "
    "the seed; then diff again."
)
def catch_up_release() -> None:
    catch_up()


@job(description="Promote this location's release: readers switch to it in one step.")
def promote_release() -> None:
    promote()


@job(description="Roll back the last promotion: readers switch to the previous release.")
def rollback_release() -> None:
    rollback()


RELEASE_JOBS = [start_release, catch_up_release, promote_release, rollback_release]
