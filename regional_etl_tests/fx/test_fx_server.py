"""The Frankfurter-compatible FX server: answers checked against the raw ECB CSV, and its faults."""

from __future__ import annotations

import datetime as dt
import socket
import time
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from regional_etl.fx import rates
from regional_etl.fx.server import FaultConfig, FXServer

from .conftest import EcbRows, ServerControl

SIX_PLACES = Decimal("0.000001")
FRIDAY = dt.date(2024, 3, 15)


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
    assert rates.history_end() == last and rates.history_start() == min(ecb_rows)


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


def test_faults_round_trip_and_injected_status_with_retry_after(fx_control: ServerControl):
    config = fx_control.set_faults(error_rate=1.0, status=429, retry_after=2)
    assert config["error_rate"] == 1.0 and config["status"] == 429
    assert fx_control.request("/_faults")[1] == config

    status, body, headers = fx_control.request(f"/{FRIDAY}?from=USD&to=INR")
    assert status == 429 and body["message"]
    assert headers["Retry-After"] == "2"
    # Control requests are not counted: only the one API request is.
    assert fx_control.stats() == {"total": 1, "by_status": {"429": 1}}

    fx_control.set_faults()  # {} clears every fault
    assert fx_control.request(f"/{FRIDAY}?from=USD&to=INR")[0] == 200
    assert fx_control.stats() == {"total": 2, "by_status": {"200": 1, "429": 1}}
    fx_control.reset_stats()
    assert fx_control.stats() == {"total": 0, "by_status": {}}


def test_unknown_or_invalid_fault_fields_are_rejected(fx_control: ServerControl):
    assert fx_control.request("/_faults", {"error_rat": 0.5})[0] == 422
    assert fx_control.request("/_faults", {"error_rate": 2})[0] == 422
    assert fx_control.request("/_faults")[1] == FaultConfig().to_dict()


def test_seeded_error_rate_is_reproducible():
    def statuses() -> list[int]:
        with FXServer(faults=FaultConfig(error_rate=0.5, seed=11)) as server:
            control = ServerControl(server.url)
            return [control.request(f"/{FRIDAY}?from=USD&to=INR")[0] for _ in range(20)]

    first = statuses()
    assert first == statuses()
    assert {200, 503} == set(first)


def test_bad_payload_is_200_without_the_frankfurter_shape(fx_control: ServerControl):
    fx_control.set_faults(bad_payload=True)
    status, body, _ = fx_control.request(f"/{FRIDAY}?from=USD&to=INR")
    assert status == 200 and "rates" not in body


def test_faults_from_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REGIONAL_ETL_FX_FAULT_ERROR_RATE", "0.25")
    monkeypatch.setenv("REGIONAL_ETL_FX_FAULT_LATENCY_MS", "5")
    monkeypatch.setenv("REGIONAL_ETL_FX_FAULT_OUTAGE_SECONDS", "0.4")
    monkeypatch.setenv("REGIONAL_ETL_FX_FAULT_SEED", "3")
    with FXServer() as server:
        control = ServerControl(server.url)
        faults = control.request("/_faults")[1]
        assert (faults["error_rate"], faults["latency_ms"], faults["seed"]) == (0.25, 5.0, 3)
        assert control.request(f"/{FRIDAY}?from=USD&to=INR")[0] == 503  # inside the outage
        time.sleep(0.5)
        control.set_faults()  # the rest of the test must not depend on random draws
        assert control.request(f"/{FRIDAY}?from=USD&to=INR")[0] == 200


def test_hang_never_answers_and_stop_releases_it():
    server = FXServer(faults=FaultConfig(hang=True)).start()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=0.3) as sock:
        sock.sendall(b"GET /latest HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(1024)
    server.stop()
    assert time.monotonic() - started < 3
    assert server.stats() == {"total": 1, "by_status": {"hang": 1}}


def test_server_binds_loopback_only(fx_server: FXServer):
    assert fx_server.url.startswith("http://127.0.0.1:")
    assert fx_server.port > 0
