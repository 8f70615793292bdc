"""Reference data: daily FX rates from `FXRatesResource`. Over HTTP, its retries, breaker state
and breaker transitions (as `AssetObservation`s) show in the UI: see docs/resilience.md."""

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetObservation,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)

from regional_etl import catalog
from regional_etl.contract import CURRENCIES, Table, schema
from regional_etl.fx.client import FrankfurterClient
from regional_etl.fx.errors import FXCircuitOpenError, FXError, FXTransientError
from regional_etl.fx.rates import BundledSource
from regional_etl.io.delta import daily_predicate, replace_partitions
from regional_etl.partitions import daily_partitions, run_dates
from regional_etl.policies import FX_RETRY_POLICY
from regional_etl.release.pointer import write_paths
from regional_etl.resources.fx import FXRatesResource
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource

FxEvent = AssetObservation | AssetMaterialization | MaterializeResult


def build_fx_rates_asset(retry_policy: RetryPolicy | None = FX_RETRY_POLICY) -> AssetsDefinition:
    """The `fx_rates` asset with a given step retry policy: tests build one with tiny delays, as
    Dagster has no public way to give a defined asset another policy."""

    @asset(
        name="fx_rates",
        partitions_def=daily_partitions,
        group_name="reference",
        backfill_policy=BackfillPolicy.single_run(),
        retry_policy=retry_policy,
        kinds={"spark", "delta"},
        metadata=catalog.definition_metadata(Table.FX_RATES),
        owners=catalog.OWNERS,
    )
    def fx_rates(
        context: AssetExecutionContext,
        fx: FXRatesResource,
        spark: SparkResource,
        warehouse: WarehouseResource,
    ) -> Iterator[FxEvent]:
        """ECB reference rates as USD per unit of every region currency (USD is 1), per date.

        Weekends and holidays take the latest earlier business day, as the Frankfurter API does;
        dates past the end of the history take its last rate and say so in the metadata. From
        the bundled ECB history, or over HTTP when a URL is set: transient FX failures are then
        retried (client, then step); 4xx, bad answers and an open circuit breaker fail at once.
        Table: `reference/fx_rates`, by `order_date`.
        """
        yield from _materialize_fx_rates(context, fx, spark, warehouse)

    return fx_rates


def _materialize_fx_rates(
    context: AssetExecutionContext,
    fx: FXRatesResource,
    spark: SparkResource,
    warehouse: WarehouseResource,
) -> Iterator[FxEvent]:
    dates, client = run_dates(context), fx.client
    before = (client.attempt_count, client.retry_count) if client else (0, 0)
    transitions: list[str] = []

    def resilience() -> dict[str, Any]:
        """How this step attempt got its rates: the bundled history, read in-process, has no HTTP
        attempts and no breaker to report. `step_attempt` is n + 1 after n step retries."""
        source = client.base_url if client else BundledSource.name
        metadata = {"fx_source": source, "step_attempt": context.retry_number + 1}
        if client is None:
            return metadata
        return metadata | {
            "http_attempts": client.attempt_count - before[0],
            "http_retries": client.retry_count - before[1],
            "breaker": client.breaker.snapshot(),
            "breaker_transitions": transitions,
        }

    rows: list[tuple[dt.date, str, Decimal]] = []
    rate_dates: dict[str, str] = {}
    latest: dt.date | None = None
    stale: list[str] = []
    rejected: dict[str, FXError] = {}
    for date in dates:
        day = dt.date.fromisoformat(date)
        try:
            quote = fx.get_usd_rates(day, CURRENCIES)
            if quote.rate_date < day and latest is None:
                latest = fx.latest_rate_date()
        except FXError as exc:
            # Observations first: yielded events are stored at once, raised ones would be lost.
            yield from _breaker_observations(context, client, date, transitions)
            if isinstance(exc, FXTransientError | FXCircuitOpenError):
                # The service, not the date: every later date would fail the same way, and
                # only the step's retry (after a wait) can help.
                raise _fx_failure(context, date, exc, resilience()) from exc
            # A date the source rejects is that date's problem: the others still publish.
            rejected[date] = exc
            continue
        yield from _breaker_observations(context, client, date, transitions)
        rate_dates[date] = quote.rate_date.isoformat()
        if latest is not None and day > latest:
            stale.append(date)
        rows.extend((day, currency, quote.usd_per_unit[currency]) for currency in CURRENCIES)
    if stale:
        context.log.warning(
            f"FX history ends on {latest}: {', '.join(stale)} use the last known rate"
        )
    summary = (f"{k}={v}" for k, v in resilience().items() if not k.startswith("breaker"))
    context.log.info(f"fx_rates: {len(dates)} date(s), {', '.join(summary)}")
    published = [d for d in dates if d not in rejected]
    if published:
        with spark.connection_errors():
            session = spark.session_for(len(rows))
            frame = session.createDataFrame(rows, schema(Table.FX_RATES))
            paths = write_paths(warehouse)
            result = replace_partitions(
                frame.coalesce(1),
                paths.table(Table.FX_RATES),
                Table.FX_RATES,
                daily_predicate(published),
                context.run.run_id,
                guard=paths.commit_guard,
            )
            table_rows = catalog.table_rows(context.instance, context.asset_key, session, result)
        metadata = {
            **result.metadata(),
            # Every date has one row per currency, so the count is right for each date of a range.
            **catalog.materialization_metadata(result, table_rows, len(CURRENCIES)),
            "rate_date": rate_dates,
            "after_history_end": bool(stale),
            "history_end": latest.isoformat() if latest else "n/a",
            "stale_dates": stale,
            **resilience(),
        }
        if not rejected:
            yield MaterializeResult(metadata=metadata)
            return
        # Each published date its own event, so only the rejected ones show as failed.
        for date in published:
            yield AssetMaterialization(context.asset_key, partition=date, metadata=metadata)
    [(first, exc), *others] = rejected.items()
    failure = _fx_failure(context, first, exc, resilience())
    if others:
        failure = Failure(
            description=f"fx_rates: {len(rejected)} of {len(dates)} dates not published (the "
            "others are): " + "; ".join(f"{d}: {e}" for d, e in rejected.items()),
            metadata=failure.metadata,
            allow_retries=False,
        )
    raise failure


def _breaker_observations(
    context: AssetExecutionContext, client: FrankfurterClient | None, date: str, seen: list[str]
) -> Iterator[AssetObservation]:
    """One observation per breaker state change since the last call, on the date that saw it."""
    for transition in client.breaker.pop_transitions() if client else []:
        text = transition.describe()
        seen.append(text)
        yield AssetObservation(
            asset_key=context.asset_key,
            partition=date,
            description=f"FX circuit breaker '{transition.breaker}': {text}",
            metadata={
                "breaker": MetadataValue.text(transition.breaker),
                "transition": MetadataValue.text(text),
                "from_state": MetadataValue.text(transition.old_state or "unknown"),
                "to_state": MetadataValue.text(transition.new_state),
                "at": MetadataValue.timestamp(transition.at),
            },
        )


def _fx_failure(
    context: AssetExecutionContext, date: str, exc: FXError, metadata: dict[str, Any]
) -> Failure:
    """The step failure for an FX error: retryable only when waiting can help. A transient one
    is also logged, saying which step retry follows or that the step gave up, since Dagster has
    no hook for retries."""
    metadata = {"error_kind": type(exc).__name__, **metadata}
    if not isinstance(exc, FXTransientError):
        why = (
            "the circuit breaker is open, retrying now cannot help"
            if isinstance(exc, FXCircuitOpenError)
            else "the FX source rejected the request or its answer is unusable, retrying cannot "
            "help"
        )
        return Failure(
            f"fx_rates {date}: {exc} (not retried: {why})", metadata, allow_retries=False
        )
    policy, retry = context.op_def.retry_policy, context.retry_number
    retries = policy.max_retries if policy is not None else 0
    if retry < retries:
        what = f"step retry {retry + 1} of {retries} follows"
    else:
        steps = f"{retries + 1} step attempts" if retries else "1 step attempt"
        what = f"gave up after {steps} of {exc.attempts} HTTP attempt(s) each"
    description = f"fx_rates {date}: transient FX failure, {what}: {exc}"
    (context.log.warning if retry < retries else context.log.error)(description)
    return Failure(description, metadata, allow_retries=True)


fx_rates = build_fx_rates_asset()
