"""The product's Frankfurter-compatible FX server: answers checked against the raw ECB CSV."""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from regional_etl.fx import rates
from regional_etl.fx.server import FXServer

from .conftest import EcbRows, ServerControl

SIX_PLACES = Decimal("0.000001")
FRIDAY = dt.date(2024, 3, 15)


@pytest.fixture
def fx_control(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerControl]:
    """The product server, with fault variables in the environment that it must ignore."""
    for name in ("ERROR_RATE", "OUTAGE_SECONDS", "LATENCY_MS"):
        monkeypatch.setenv(f"REGIONAL_ETL_FX_FAULT_{name}", "1")
    with FXServer() as server:
        yield ServerControl(server.url)


def per_usd(row: dict[str, str], code: str, amount: int = 1) -> Decimal:
    """Units of `code` per USD from one raw CSV row: the documented 6-place half-even rounding."""
    per_eur = Decimal(1) if code == "EUR" else Decimal(row[code])
    return (amount * per_eur / Decimal(row["USD"])).quantize(SIX_PLACES, ROUND_HALF_EVEN)


def as_decimals(body_rates: dict[str, float]) -> dict[str, Decimal]:
    return {code: Decimal(str(value)) for code, value in body_rates.items()}


def test_weekday_answers_that_days_ecb_rates(fx_control: ServerControl, ecb_rows: EcbRows):
    assert FRIDAY.weekday() == 4 and FRIDAY in ecb_rows
    status, body, _ = fx_control.request(f"/{FRIDAY}?from=USD&to=EUR,INR,JPY")
    assert status == 200
    assert body["amount"] == 1.0 and body["base"] == "USD" and body["date"] == "2024-03-15"
    row = ecb_rows[FRIDAY]
    assert as_decimals(body["rates"]) == {c: per_usd(row, c) for c in ("EUR", "INR", "JPY")}


def test_saturday_answers_fridays_rates(fx_control: ServerControl, ecb_rows: EcbRows):
    saturday = FRIDAY + dt.timedelta(days=1)
    status, body, _ = fx_control.request(f"/{saturday}?from=USD&to=INR")
    assert status == 200
    assert body["date"] == FRIDAY.isoformat()
    assert as_decimals(body["rates"]) == {"INR": per_usd(ecb_rows[FRIDAY], "INR")}


def test_after_history_end_and_latest_answer_the_last_day(
    fx_control: ServerControl, ecb_rows: EcbRows
):
    last = max(ecb_rows)
    expected = {"INR": per_usd(ecb_rows[last], "INR")}
    for path in (f"/{last + dt.timedelta(days=400)}", "/latest"):
        status, body, _ = fx_control.request(f"{path}?from=USD&to=INR")
        assert status == 200, path
        assert body["date"] == last.isoformat()
        assert as_decimals(body["rates"]) == expected
    assert rates.history_end() == last and rates.load_history().dates[0] == min(ecb_rows)


def test_before_history_start_is_404(fx_control: ServerControl, ecb_rows: EcbRows):
    before = min(ecb_rows) - dt.timedelta(days=1)
    assert fx_control.request(f"/{before}?from=USD&to=INR")[:2] == (404, {"message": "not found"})


@pytest.mark.parametrize(
    "path",
    [
        "/2024-03-15?from=USD&to=XXX",  # never an ECB currency
        "/2024-03-15?from=USD&to=RUB",  # ECB stopped quoting RUB in March 2022
        "/2024-03-15?from=US&to=INR",  # not a currency code
        "/2024-02-30?from=USD&to=INR",  # not a calendar date
        "/yesterday?from=USD&to=INR",
        "/2024-03-15?from=USD&to=INR&amount=-1",
    ],
)
def test_bad_currency_date_or_amount_is_422(fx_control: ServerControl, path: str):
    status, body, _ = fx_control.request(path)
    assert status == 422
    assert body["message"]


def test_older_parameter_names_and_amount(fx_control: ServerControl, ecb_rows: EcbRows):
    status, body, _ = fx_control.request(f"/{FRIDAY}?base=USD&symbols=INR,EUR&amount=10")
    assert status == 200
    assert body["amount"] == 10.0
    row = ecb_rows[FRIDAY]
    assert as_decimals(body["rates"]) == {c: per_usd(row, c, 10) for c in ("INR", "EUR")}


def test_default_base_is_eur_with_every_currency_of_the_day(
    fx_control: ServerControl, ecb_rows: EcbRows
):
    status, body, _ = fx_control.request(f"/{FRIDAY}")
    assert status == 200 and body["base"] == "EUR"
    assert set(body["rates"]) == set(ecb_rows[FRIDAY]) - {"Date"}


def test_rounding_is_six_places_half_even():
    # Hand-made history with exact ties at the 7th decimal place.
    history = rates.parse_history_csv(
        "Date,USD,AAA,BBB,\n2024-01-02,2,0.000001,0.000003,\n"  # AAA/USD = 0.0000005 (tie)
    )
    _, found = rates.rates_for(dt.date(2024, 1, 2), "USD", ["AAA", "BBB", "EUR"], history=history)
    assert found == {
        "AAA": Decimal("0.000000"),  # tie rounds to the even neighbour (half-up would give 1e-6)
        "BBB": Decimal("0.000002"),  # 0.0000015: tie, even neighbour is 2e-6
        "EUR": Decimal("0.500000"),
    }
    assert rates.rates_for(dt.date(2024, 1, 9), "EUR", ["EUR"], history=history)[1] == {
        "EUR": Decimal(1)
    }


def test_no_fault_control_endpoints(fx_control: ServerControl):
    assert fx_control.request("/_faults")[0] == 422  # read as a date, like any other path
    post = urllib.request.Request(fx_control.url + "/_faults", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:  # no POST at all
        urllib.request.urlopen(post, timeout=5)
    assert caught.value.code == 501
    assert fx_control.request(f"/{FRIDAY}?from=USD&to=INR")[0] == 200


def test_server_binds_loopback_only_and_stops(fx_control: ServerControl):
    assert fx_control.url.startswith("http://127.0.0.1:")
    with FXServer() as server:
        url = server.url
    with pytest.raises(OSError):
        ServerControl(url).request("/latest")
