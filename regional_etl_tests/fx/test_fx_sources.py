"""The two FX sources agree: the bundled history read in-process gives exactly what the HTTP
client gets from the product's FX server, quote by quote and in the published `fx_rates`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, materialize

from regional_etl.assets.reference import fx_rates
from regional_etl.contract import CURRENCIES, Table
from regional_etl.fx.errors import FXPermanentError
from regional_etl.fx.rates import BundledSource, FxQuote
from regional_etl.fx.server import FXServer
from regional_etl.resources.fx import FXRatesResource
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource
from regional_etl_tests import oracle
from regional_etl_tests.conftest import TEST_SPARK_CONF

from .conftest import EcbRows

GOOD_FRIDAY, EASTER_MONDAY, CHRISTMAS = (
    dt.date(2024, 3, 29),
    dt.date(2024, 4, 1),
    dt.date(2023, 12, 25),
)
WIDE = ["USD", "EUR", "INR", "JPY", "GBP", "CHF", "IDR", "KRW", "HUF", "ISK"]


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def outcome(fx: FXRatesResource, date: dt.date, currencies: list[str]) -> Any:
    """(rate_date, usd_per_unit), or the error's kind: what a caller can act on."""
    try:
        quote: FxQuote = fx.get_usd_rates(date, currencies)
    except FXPermanentError:
        return "FXPermanentError"
    return quote.rate_date, quote.usd_per_unit


def test_bundled_source_quotes_what_the_http_client_gets_from_the_server(
    pipeline_fx_server: FXServer, breaker_url: str, ecb_rows: EcbRows
):
    end = max(ecb_rows)
    # Holidays with no ECB row on a weekday, so the test covers them and not only weekends.
    assert {GOOD_FRIDAY, EASTER_MONDAY, CHRISTMAS}.isdisjoint(ecb_rows)
    assert GOOD_FRIDAY.weekday() == 4 and CHRISTMAS.weekday() == 0
    dates = [
        *days(dt.date(2023, 12, 21), dt.date(2024, 1, 3)),
        *days(dt.date(2024, 3, 26), dt.date(2024, 4, 3)),
        *days(end - dt.timedelta(days=2), end + dt.timedelta(days=4)),
        end + dt.timedelta(days=400),
        dt.date(1998, 12, 31),  # before the history: rejected by both
    ]
    http = FXRatesResource(base_url=pipeline_fx_server.url, breaker_storage_url=breaker_url)
    bundled = FXRatesResource()
    for date in dates:
        for currencies in (list(CURRENCIES), WIDE, ["USD"], ["XXX"]):
            expected = outcome(http, date, currencies)
            assert outcome(bundled, date, currencies) == expected, (date, currencies)
        if date > dt.date(1999, 1, 4):
            assert outcome(bundled, date, list(CURRENCIES))[1] == oracle.ecb_usd_per_unit(date)
    assert http.latest_rate_date() == bundled.latest_rate_date() == end
    # One HTTP attempt per call (none failed); the bundled source has no HTTP client at all.
    assert http.client is not None and http.client.attempt_count == len(dates) * 4 + 1
    assert bundled.client is None


def fx_run(
    spark: Any,
    instance: DagsterInstance,
    root: Path,
    fx: FXRatesResource,
    first: dt.date,
    last: dt.date,
) -> tuple[dict[str, Any], list[tuple[str, str, Any]]]:
    """Materialize `fx_rates` over first..last in one range run: its metadata and its rows."""
    warehouse = WarehouseResource(
        landing_root=str(root / "landing"), warehouse_root=str(root / "warehouse")
    )
    resources = {
        "spark": SparkResource(session_config=TEST_SPARK_CONF),
        "warehouse": warehouse,
        "fx": fx,
    }
    result = materialize(
        [fx_rates],
        resources=resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
    # One materialization per date of the range, each with the run's metadata.
    materializations = result.asset_materializations_for_node("fx_rates")
    assert sorted(str(m.partition) for m in materializations) == [
        d.isoformat() for d in days(first, last)
    ]
    table = spark.read.format("delta").load(warehouse.table(Table.FX_RATES)).collect()
    rows = sorted((str(r.order_date), r.currency, r.usd_per_unit) for r in table)
    return {key: value.value for key, value in materializations[0].metadata.items()}, rows


@pytest.mark.parametrize("after_history_end", [False, True], ids=["easter", "after-history-end"])
def test_published_fx_rates_are_the_same_through_either_source(
    spark: Any,
    instance: DagsterInstance,
    tmp_path: Path,
    pipeline_fx_server: FXServer,
    breaker_url: str,
    ecb_rows: EcbRows,
    after_history_end: bool,
):
    end = max(ecb_rows)
    # Thursday to Tuesday: Good Friday, a weekend, Easter Monday; or past the history's end.
    first, last = (
        (end - dt.timedelta(days=1), end + dt.timedelta(days=3))
        if after_history_end
        else (GOOD_FRIDAY - dt.timedelta(days=1), EASTER_MONDAY + dt.timedelta(days=1))
    )
    http = FXRatesResource(base_url=pipeline_fx_server.url, breaker_storage_url=breaker_url)
    runs, tables = {}, {}
    for name, fx in (("http", http), ("bundled", FXRatesResource())):
        runs[name], tables[name] = fx_run(spark, instance, tmp_path / name, fx, first, last)
    assert tables["bundled"] == tables["http"]
    assert len(tables["http"]) == len(days(first, last)) * len(CURRENCIES)
    same = ("rate_date", "after_history_end", "history_end", "stale_dates")
    assert {k: runs["bundled"][k] for k in same} == {k: runs["http"][k] for k in same}
    assert runs["http"]["after_history_end"] is after_history_end
    if after_history_end:
        assert runs["http"]["history_end"] == end.isoformat()
        assert runs["http"]["stale_dates"] == [
            d.isoformat() for d in days(end + dt.timedelta(days=1), last)
        ]

    # What each run says about how it got the rates: HTTP attempts and the breaker only for HTTP.
    assert runs["http"]["fx_source"] == pipeline_fx_server.url
    # One request per date, and one `/latest` for the first date that took an earlier day.
    assert runs["http"]["http_attempts"] == len(days(first, last)) + 1
    assert runs["http"]["breaker"]["state"] == "closed"
    assert runs["bundled"]["fx_source"] == BundledSource.name
    assert not {"http_attempts", "http_retries", "breaker"} & set(runs["bundled"])
    assert runs["bundled"]["step_attempt"] == runs["http"]["step_attempt"] == 1
