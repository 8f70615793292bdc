"""Reference data: daily FX rates from the Frankfurter-compatible FX service."""

import datetime as dt
from decimal import Decimal

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from regional_etl.contract import CURRENCIES, Table, schema
from regional_etl.io.delta import daily_predicate, replace_partitions
from regional_etl.partitions import daily_partitions, run_dates
from regional_etl.policies import FX_RETRY_POLICY
from regional_etl.resources.fx import FXCircuitOpenError, FXPermanentError, FXRatesResource
from regional_etl.resources.spark import SparkResource
from regional_etl.resources.warehouse import WarehouseResource


@asset(
    partitions_def=daily_partitions,
    group_name="reference",
    backfill_policy=BackfillPolicy.single_run(),
    retry_policy=FX_RETRY_POLICY,
    kinds={"spark", "delta"},
    metadata={"delta_table": Table.FX_RATES.value},
)
def fx_rates(
    context: AssetExecutionContext,
    fx: FXRatesResource,
    spark: SparkResource,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    """ECB reference rates as USD per unit of every region currency (USD is 1), per date.

    Weekends and holidays take the latest earlier business day, as the Frankfurter API does;
    dates past the end of the service's history take its last rate and say so in the metadata.
    Table: `reference/fx_rates`, partitioned by `order_date`.
    """
    dates = run_dates(context)
    rows: list[tuple[dt.date, str, Decimal]] = []
    rate_dates: dict[str, str] = {}
    attempts = 0
    latest: dt.date | None = None
    stale: list[str] = []
    for date in dates:
        day = dt.date.fromisoformat(date)
        try:
            quote = fx.get_usd_rates(day, CURRENCIES)
            if quote.rate_date < day and latest is None:
                latest = fx.latest_rate_date()
        except (FXPermanentError, FXCircuitOpenError) as exc:
            # Retrying cannot help a bad request or an open breaker: fail now, clearly.
            raise Failure(
                description=f"fx_rates {date}: {exc}",
                allow_retries=False,
                metadata={"breaker": MetadataValue.json(fx.breaker_state())},
            ) from exc
        attempts += quote.attempts
        rate_dates[date] = quote.rate_date.isoformat()
        if latest is not None and day > latest:
            stale.append(date)
        rows.extend((day, currency, quote.usd_per_unit[currency]) for currency in CURRENCIES)
    if stale:
        context.log.warning(
            f"FX history ends on {latest}: {', '.join(stale)} use the last known rate"
        )
    frame = spark.spark_session.createDataFrame(rows, schema(Table.FX_RATES))
    result = replace_partitions(
        frame.coalesce(1),
        warehouse.table(Table.FX_RATES),
        Table.FX_RATES,
        daily_predicate(dates),
        context.run_id,
    )
    return MaterializeResult(
        metadata={
            **result.metadata(),
            "rate_date": MetadataValue.json(rate_dates),
            "after_history_end": MetadataValue.bool(bool(stale)),
            "history_end": MetadataValue.text(latest.isoformat() if latest else "n/a"),
            "stale_dates": MetadataValue.json(stale),
            "http_attempts": MetadataValue.int(attempts),
            "breaker": MetadataValue.json(fx.breaker_state()),
        }
    )
