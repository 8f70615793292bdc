"""Reference data: daily FX rates from the Frankfurter-compatible FX service.

Resilience, as the UI shows it:
- HTTP attempts and retries of the FX client are in the run log (one line per retry) and in the
  materialization metadata (`http_attempts`, `http_retries`, `step_attempt`).
- A transient failure that outlived the client's retries (`FXTransientError`) fails the step with
  `Failure(allow_retries=True)`: the step's `RetryPolicy` retries it (STEP_UP_FOR_RETRY in the
  run log, after a line saying why and which retry it is).
- A permanent error (4xx, bad payload) or an open circuit breaker fails with
  `Failure(allow_retries=False)`: no retry, the reason in the failure message.
- Every circuit-breaker state change is an `AssetObservation` of `fx_rates` ("closed -> open at
  T"), emitted as it is seen, so it is recorded even when the step then fails.
"""

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

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
from regional_etl.io.delta import daily_predicate, replace_partitions
from regional_etl.partitions import daily_partitions, run_dates
from regional_etl.policies import FX_RETRY_POLICY
from regional_etl.resources.fx import (
    FXCircuitOpenError,
    FXError,
    FXRatesResource,
    FXTransientError,
)
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource

FxEvent = AssetObservation | AssetMaterialization | MaterializeResult


def build_fx_rates_asset(retry_policy: RetryPolicy | None = FX_RETRY_POLICY) -> AssetsDefinition:
    """The `fx_rates` asset with a given step retry policy (tests build one with tiny delays)."""

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
        dates past the end of the service's history take its last rate and say so in the
        metadata. Transient FX failures are retried (client, then step); 4xx, bad answers and an
        open circuit breaker fail at once. Table: `reference/fx_rates`, by `order_date`.
        """
        yield from _materialize_fx_rates(context, fx, spark, warehouse)

    return fx_rates


def _materialize_fx_rates(
    context: AssetExecutionContext,
    fx: FXRatesResource,
    spark: SparkResource,
    warehouse: WarehouseResource,
) -> Iterator[FxEvent]:
    dates = run_dates(context)
    attempts_before, retries_before = fx.attempt_count, fx.retry_count
    transitions: list[str] = []
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
            yield from _breaker_observations(context, fx, date, transitions)
            if isinstance(exc, FXTransientError | FXCircuitOpenError):
                # The service, not the date: every later date would fail the same way, and
                # only the step's retry (after a wait) can help.
                counts = (fx.attempt_count - attempts_before, fx.retry_count - retries_before)
                raise _fx_failure(context, fx, date, exc, counts, transitions) from exc
            # A date the service rejects is that date's problem: the others still publish.
            rejected[date] = exc
            continue
        yield from _breaker_observations(context, fx, date, transitions)
        rate_dates[date] = quote.rate_date.isoformat()
        if latest is not None and day > latest:
            stale.append(date)
        rows.extend((day, currency, quote.usd_per_unit[currency]) for currency in CURRENCIES)
    if stale:
        context.log.warning(
            f"FX history ends on {latest}: {', '.join(stale)} use the last known rate"
        )
    http_attempts = fx.attempt_count - attempts_before
    http_retries = fx.retry_count - retries_before
    context.log.info(
        f"fx_rates: {len(dates)} date(s) in {http_attempts} HTTP attempt(s), {http_retries} "
        f"retried, step attempt {context.retry_number + 1}"
    )
    published = [d for d in dates if d not in rejected]
    if published:
        with spark.connection_errors():
            session = spark.session_for(len(rows))
            frame = session.createDataFrame(rows, schema(Table.FX_RATES))
            result = replace_partitions(
                frame.coalesce(1),
                warehouse.table(Table.FX_RATES),
                Table.FX_RATES,
                daily_predicate(published),
                context.run.run_id,
            )
            table_rows = catalog.table_rows(context.instance, context.asset_key, session, result)
        metadata = {
            **result.metadata(),
            # Every date has one row per currency, so the count is right for each date of a range.
            **catalog.materialization_metadata(result, table_rows, len(CURRENCIES)),
            "rate_date": MetadataValue.json(rate_dates),
            "after_history_end": MetadataValue.bool(bool(stale)),
            "history_end": MetadataValue.text(latest.isoformat() if latest else "n/a"),
            "stale_dates": MetadataValue.json(stale),
            **_resilience_metadata(context, fx, http_attempts, http_retries, transitions),
        }
        if not rejected:
            yield MaterializeResult(metadata=metadata)
            return
        # Each published date its own event, so only the rejected ones show as failed.
        for date in published:
            yield AssetMaterialization(context.asset_key, partition=date, metadata=metadata)
    [(first, exc), *others] = rejected.items()
    failure = _fx_failure(context, fx, first, exc, (http_attempts, http_retries), transitions)
    if others:
        failure = Failure(
            description=f"fx_rates: {len(rejected)} of {len(dates)} dates not published (the "
            "others are): " + "; ".join(f"{d}: {e}" for d, e in rejected.items()),
            metadata=failure.metadata,
            allow_retries=False,
        )
    raise failure


def _resilience_metadata(
    context: AssetExecutionContext,
    fx: FXRatesResource,
    http_attempts: int,
    http_retries: int,
    transitions: list[str],
) -> dict[str, MetadataValue]:
    return {
        "http_attempts": MetadataValue.int(http_attempts),
        "http_retries": MetadataValue.int(http_retries),
        # 1 on the first try; n + 1 after n step retries by the RetryPolicy.
        "step_attempt": MetadataValue.int(context.retry_number + 1),
        "breaker": MetadataValue.json(fx.breaker_state()),
        "breaker_transitions": MetadataValue.json(transitions),
    }


def _breaker_observations(
    context: AssetExecutionContext, fx: FXRatesResource, date: str, seen: list[str]
) -> Iterator[AssetObservation]:
    """One observation per breaker state change since the last call, on the date that saw it."""
    for transition in fx.pop_breaker_transitions():
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
    context: AssetExecutionContext,
    fx: FXRatesResource,
    date: str,
    exc: FXError,
    counts: tuple[int, int],
    transitions: list[str],
) -> Failure:
    """The step failure for an FX error: retryable only when waiting can help."""
    metadata = {
        "error_kind": MetadataValue.text(type(exc).__name__),
        **_resilience_metadata(context, fx, *counts, transitions),
    }
    if isinstance(exc, FXTransientError):
        policy = context.op_def.retry_policy
        max_retries = policy.max_retries if policy is not None else 0
        tried = f"{exc.attempts} HTTP attempt(s)"
        if policy is None:
            what = f"failed after {tried} (this asset has no step RetryPolicy)"
        elif context.retry_number < max_retries:
            what = f"step retry {context.retry_number + 1} of {max_retries} follows"
        else:
            # The step's final failure: the alert and the UI say it gave up, not "retryable".
            what = f"gave up after {max_retries + 1} step attempts of {tried} each"
        if policy is None:
            context.log.warning(
                f"fx_rates {date}: the FX service still failed after {exc.attempts} HTTP "
                f"attempt(s) ({exc}); this asset has no step RetryPolicy (a job-level one may "
                "still retry it)"
            )
        elif context.retry_number < max_retries:
            context.log.warning(
                f"fx_rates {date}: the FX service still failed after {exc.attempts} HTTP "
                f"attempt(s) ({exc}); step retry {context.retry_number + 1} of {max_retries} "
                "follows (STEP_UP_FOR_RETRY, exponential backoff with jitter)"
            )
        else:
            context.log.error(
                f"fx_rates {date}: the FX service still failed after {exc.attempts} HTTP "
                f"attempt(s) and {max_retries} step retries: giving up on this run"
            )
        return Failure(
            description=f"fx_rates {date}: transient FX failure, {what}: {exc}",
            metadata=metadata,
            allow_retries=True,
        )
    why = (
        "the circuit breaker is open, retrying now cannot help"
        if isinstance(exc, FXCircuitOpenError)
        else "the FX service rejected the request or its answer is unusable, retrying cannot help"
    )
    return Failure(
        description=f"fx_rates {date}: {exc} (not retried: {why})",
        metadata=metadata,
        allow_retries=False,
    )


fx_rates = build_fx_rates_asset()
