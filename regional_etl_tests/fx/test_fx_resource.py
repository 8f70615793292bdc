"""FXRatesResource against a real FX server (rates, retries, timeouts and the shared breaker),
and without a URL, on the bundled history in-process."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import subprocess
import sys
import threading
import time
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

import pybreaker
import pytest
from dagster import asset, build_init_resource_context, materialize

from regional_etl.fx.breaker import SQLiteCircuitBreakerStorage
from regional_etl.fx.errors import FXCircuitOpenError, FXPermanentError, FXTransientError
from regional_etl.fx.rates import BundledSource
from regional_etl.resources.fx import FXRatesResource
from regional_etl_tests.e2e_support import free_port
from regional_etl_tests.fx_faults import FaultyFXServer

from .conftest import EcbRows, MakeResource, ServerControl

FRIDAY = dt.date(2024, 3, 15)


def expected_usd_per_unit(row: dict[str, str], code: str) -> Decimal:
    """Independent of the client: CSV -> 6-place half-even rate per USD -> 10-place half-up USD."""
    per_eur = Decimal(1) if code == "EUR" else Decimal(row[code])
    rate = (per_eur / Decimal(row["USD"])).quantize(Decimal("0.000001"), ROUND_HALF_EVEN)
    return (Decimal(1) / rate).quantize(Decimal("0.0000000001"), ROUND_HALF_UP)


def breaker_state(fx: FXRatesResource) -> dict[str, Any]:
    """The breaker's state as `fx_rates` metadata shows it (resources with a URL only)."""
    assert fx.client is not None
    return fx.client.breaker.snapshot()


# --- rates --------------------------------------------------------------------------------------


def test_weekday_quote_matches_the_ecb_csv(
    make_resource: MakeResource, fx_control: ServerControl, ecb_rows: EcbRows
):
    quote = make_resource().get_usd_rates(FRIDAY, ["USD", "eur", "INR"])
    row = ecb_rows[FRIDAY]
    assert quote.rate_date == FRIDAY
    assert quote.usd_per_unit == {
        "USD": Decimal(1),
        "EUR": expected_usd_per_unit(row, "EUR"),
        "INR": expected_usd_per_unit(row, "INR"),
    }
    assert quote.attempts == 1
    assert quote.source == f"{fx_control.url}/2024-03-15?from=USD&to=EUR,INR"


def test_saturday_uses_friday_and_late_dates_use_the_last_day(
    make_resource: MakeResource, ecb_rows: EcbRows
):
    fx = make_resource()
    saturday = fx.get_usd_rates(FRIDAY + dt.timedelta(days=1), ["INR"])
    assert saturday.rate_date == FRIDAY

    last = max(ecb_rows)
    late = fx.get_usd_rates(last + dt.timedelta(days=30), ["INR"])
    assert late.rate_date == last
    assert late.usd_per_unit["INR"] == expected_usd_per_unit(ecb_rows[last], "INR")
    assert fx.latest_rate_date() == last


def test_usd_only_needs_no_conversion_but_still_asks_for_the_rate_date(
    make_resource: MakeResource, fx_control: ServerControl
):
    quote = make_resource().get_usd_rates(FRIDAY + dt.timedelta(days=2), ["USD"])
    assert quote.usd_per_unit == {"USD": Decimal(1)}
    assert quote.rate_date == FRIDAY
    assert quote.source == f"{fx_control.url}/2024-03-17?from=USD"


# --- permanent errors: no retry, no breaker failure ---------------------------------------------


def test_before_history_start_is_permanent_and_not_retried(
    make_resource: MakeResource, fx_control: ServerControl
):
    with pytest.raises(FXPermanentError, match="HTTP 404") as caught:
        make_resource().get_usd_rates(dt.date(1998, 12, 31), ["INR"])
    assert caught.value.status == 404 and caught.value.attempts == 1
    assert fx_control.stats() == {"total": 1, "by_status": {"404": 1}}


def test_unknown_currency_is_permanent_and_does_not_open_the_breaker(
    make_resource: MakeResource, fx_control: ServerControl
):
    fx = make_resource(breaker_fail_max=1)
    for _ in range(3):
        with pytest.raises(FXPermanentError, match="XXX") as caught:
            fx.get_usd_rates(FRIDAY, ["XXX"])
        assert caught.value.status == 422
        assert fx_control.url in str(caught.value)
    assert fx_control.stats() == {"total": 3, "by_status": {"422": 3}}  # one request per call
    assert breaker_state(fx)["state"] == "closed"
    assert breaker_state(fx)["fail_counter"] == 0


def test_bad_payload_is_permanent_and_not_retried(
    make_resource: MakeResource, fx_control: ServerControl
):
    fx_control.set_faults(bad_payload=True)
    with pytest.raises(FXPermanentError) as caught:
        make_resource().get_usd_rates(FRIDAY, ["INR"])
    message = str(caught.value)
    assert fx_control.url in message and "Frankfurter shape" in message
    assert fx_control.stats() == {"total": 1, "by_status": {"200": 1}}


# --- transient errors: retried ------------------------------------------------------------------


def test_seeded_503s_succeed_through_retries(
    make_resource: MakeResource, fx_control: ServerControl
):
    # With seed 7 the first two draws fall under 0.5: two 503s, then a 200.
    fx_control.set_faults(error_rate=0.5, seed=7)
    fx = make_resource(max_attempts=6)
    quote = fx.get_usd_rates(FRIDAY, ["INR"])
    assert quote.attempts > 1
    assert fx.client is not None and fx.client.retry_count == quote.attempts - 1
    assert fx_control.stats() == {
        "total": quote.attempts,
        "by_status": {"200": 1, "503": quote.attempts - 1},
    }


def test_retries_exhausted_raise_transient_error(
    make_resource: MakeResource, fx_control: ServerControl
):
    fx_control.set_faults(error_rate=1.0)
    with pytest.raises(FXTransientError, match="HTTP 503") as caught:
        make_resource(max_attempts=3).get_usd_rates(FRIDAY, ["INR"])
    assert caught.value.attempts == 3
    assert fx_control.stats() == {"total": 3, "by_status": {"503": 3}}


def test_connection_refused_is_transient(breaker_url: str):
    port = free_port()  # free a moment ago: nothing listens there
    fx = FXRatesResource(
        base_url=f"http://127.0.0.1:{port}",
        breaker_storage_url=breaker_url,
        max_attempts=2,
        backoff_base_seconds=0.01,
    )
    with pytest.raises(FXTransientError, match="refused") as caught:
        fx.get_usd_rates(FRIDAY, ["INR"])
    assert caught.value.attempts == 2


def test_hanging_server_times_out_within_a_bounded_time(
    make_resource: MakeResource, fx_control: ServerControl
):
    fx = make_resource(timeout_seconds=0.5, max_attempts=2)
    fx_control.set_faults(hang=True)
    started = time.monotonic()
    with pytest.raises(FXTransientError, match="timed out") as caught:
        fx.get_usd_rates(FRIDAY, ["INR"])
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 3.0  # two 0.5 s timeouts and a tiny backoff
    assert caught.value.attempts == 2
    assert fx_control.stats() == {"total": 2, "by_status": {"hang": 2}}


def test_retry_after_on_429_is_honoured(make_resource: MakeResource, fx_control: ServerControl):
    # 429 for the next second, telling the client to come back in 1 s. The client's own backoff
    # (<= 0.05 s) would come back too early and meet another 429; honouring the header wins.
    fx = make_resource(max_attempts=3, backoff_max_seconds=5)
    # The outage window starts at this POST, so the resource is set up before it.
    fx_control.set_faults(outage_seconds=1.0, status=429, retry_after=1)
    started = time.monotonic()
    quote = fx.get_usd_rates(FRIDAY, ["INR"])
    assert time.monotonic() - started >= 1.0
    assert quote.attempts == 2
    assert fx_control.stats() == {"total": 2, "by_status": {"200": 1, "429": 1}}


def test_retry_after_is_capped_by_backoff_max(
    make_resource: MakeResource, fx_control: ServerControl
):
    fx = make_resource(max_attempts=2, backoff_max_seconds=0.5)
    fx_control.set_faults(outage_seconds=0.3, status=503, retry_after=30)
    started = time.monotonic()
    quote = fx.get_usd_rates(FRIDAY, ["INR"])
    assert time.monotonic() - started < 2.0
    assert quote.attempts == 2


# --- circuit breaker ----------------------------------------------------------------------------

# Runs in a separate process: waits for a line on stdin so the parent can trip the breaker after
# this process has paid its import time, then makes one call and reports what happened.
CHILD = """
import datetime as dt, json, sys
from dagster import build_init_resource_context
from regional_etl.resources.fx import FXRatesResource
fx = FXRatesResource(base_url=sys.argv[1], breaker_storage_url=sys.argv[2], breaker_fail_max=2,
                     breaker_reset_timeout_seconds=float(sys.argv[3]), max_attempts=2,
                     backoff_base_seconds=0.01)
fx.setup_for_execution(build_init_resource_context())
print("ready", flush=True)
sys.stdin.readline()
try:
    fx.get_usd_rates(dt.date(2024, 3, 15), ["INR"])
    print(json.dumps({"error": None}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc),
                      "state": fx.client.breaker.snapshot()["state"]}))
"""


def _sleep_until(iso_time: str) -> None:
    remaining = (dt.datetime.fromisoformat(iso_time) - dt.datetime.now(dt.UTC)).total_seconds()
    time.sleep(max(remaining, 0) + 0.1)


def test_outage_opens_the_breaker_for_every_process_until_a_probe_succeeds(
    make_resource: MakeResource, fx_control: ServerControl, breaker_url: str
):
    reset_timeout = 1.5
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, fx_control.url, breaker_url, str(reset_timeout)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"

        # Total outage: two logical calls (two attempts each) fail and open the breaker.
        fx_control.set_faults(outage_seconds=3600)
        fx = make_resource(
            breaker_fail_max=2, breaker_reset_timeout_seconds=reset_timeout, max_attempts=2
        )
        for expected_counter in (1, 2):
            with pytest.raises(FXTransientError):
                fx.get_usd_rates(FRIDAY, ["INR"])
            assert breaker_state(fx)["fail_counter"] == expected_counter
        state = breaker_state(fx)
        assert state["state"] == "open" and state["reopens_at"]
        assert fx_control.stats()["total"] == 4

        # Same process: fails fast, and says when it will try again.
        with pytest.raises(FXCircuitOpenError, match="will try again at") as caught:
            fx.get_usd_rates(FRIDAY, ["INR"])
        assert caught.value.reopens_at is not None
        assert caught.value.reopens_at.isoformat() == state["reopens_at"]

        # Another process, same SQLite file: fails fast too. Its call is made as soon as it
        # reads "go", well inside the reset timeout; how long it then takes to exit is moot.
        out, _ = child.communicate("go\n", timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    report = json.loads(out.strip().splitlines()[-1])
    assert report["error"] == "FXCircuitOpenError" and report["state"] == "open"
    assert "open" in report["message"] and state["reopens_at"] in report["message"]
    assert fx_control.stats()["total"] == 4  # neither fast failure reached the server

    # After the timeout a single-attempt probe goes through; the outage goes on, so it reopens.
    _sleep_until(state["reopens_at"])
    with pytest.raises(FXTransientError) as probe_failure:
        fx.get_usd_rates(FRIDAY, ["INR"])
    assert probe_failure.value.attempts == 1
    assert fx_control.stats()["total"] == 5
    state = breaker_state(fx)
    assert state["state"] == "open"

    # The service recovers: the next probe succeeds and closes the breaker.
    fx_control.set_faults()
    _sleep_until(state["reopens_at"])
    quote = fx.get_usd_rates(FRIDAY, ["INR"])
    assert quote.attempts == 1
    assert fx_control.stats()["total"] == 6
    assert breaker_state(fx) | {"opened_at": None} == {
        "name": "fx-rates",
        "state": "closed",
        "fail_counter": 0,
        "fail_max": 2,
        "opened_at": None,
        "reopens_at": None,
    }
    assert fx.client is not None
    assert [(t.old_state, t.new_state) for t in fx.client.breaker.pop_transitions()] == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]
    assert fx.client.breaker.pop_transitions() == []


def test_sqlite_storage_is_shared_and_counts_atomically(tmp_path):
    path = tmp_path / "breaker.sqlite"
    first = SQLiteCircuitBreakerStorage(path, "shared")
    second = SQLiteCircuitBreakerStorage(path, "shared")
    other = SQLiteCircuitBreakerStorage(path, "other")

    def bump() -> None:
        for _ in range(25):
            first.increment_counter()

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert second.counter == 100 and other.counter == 0

    opened = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    first.opened_at = opened
    first.state = pybreaker.STATE_OPEN
    assert (second.state, second.opened_at) == (pybreaker.STATE_OPEN, opened)
    second.increment_success_counter()
    assert first.success_counter == 1
    first.reset_counter()
    first.reset_success_counter()
    assert (second.counter, second.success_counter) == (0, 0)
    assert other.state == pybreaker.STATE_CLOSED and other.opened_at is None


# --- lifecycle and Dagster wiring ---------------------------------------------------------------


def test_without_base_url_the_resource_reads_the_bundled_history_in_process(
    tmp_path, monkeypatch: pytest.MonkeyPatch, ecb_rows: EcbRows
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    threads = set(threading.enumerate())
    fx = FXRatesResource()
    fx.setup_for_execution(build_init_resource_context())
    quote = fx.get_usd_rates(FRIDAY + dt.timedelta(days=1), ["usd", "INR"])
    assert quote.rate_date == FRIDAY
    assert quote.usd_per_unit == {
        "USD": Decimal(1),
        "INR": expected_usd_per_unit(ecb_rows[FRIDAY], "INR"),
    }
    assert (quote.attempts, quote.source) == (0, BundledSource.name)
    assert fx.latest_rate_date() == max(ecb_rows)
    with pytest.raises(FXPermanentError, match="before the ECB history") as caught:
        fx.get_usd_rates(dt.date(1998, 12, 31), ["INR"])
    assert (caught.value.attempts, caught.value.status) == (0, None)
    # No server thread, no HTTP, no breaker and so no breaker file. (New threads only: one that
    # an earlier test left may end meanwhile.)
    assert not set(threading.enumerate()) - threads
    assert fx.client is None and isinstance(fx.source, BundledSource)
    assert not (tmp_path / "fx_circuit_breaker.sqlite").exists()


def test_default_breaker_storage_lives_in_dagster_home(
    tmp_path, monkeypatch: pytest.MonkeyPatch, fx_server: FaultyFXServer
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    fx = FXRatesResource(base_url=fx_server.url)
    fx.setup_for_execution(build_init_resource_context())
    assert breaker_state(fx)["state"] == "closed"
    assert (tmp_path / "fx_circuit_breaker.sqlite").is_file()


@pytest.mark.skipif(
    importlib.util.find_spec("redis") is not None,
    reason="redis is installed: the missing-extra message cannot be shown",
)
def test_redis_storage_needs_the_optional_extra(fx_server: FaultyFXServer):
    fx = FXRatesResource(base_url=fx_server.url, breaker_storage_url="redis://127.0.0.1:1/0")
    with pytest.raises(ImportError, match=r"regional_etl\[redis\]"):
        fx.setup_for_execution(build_init_resource_context())


def test_resource_in_a_dagster_run(fx_server: FaultyFXServer, breaker_url: str):
    @asset
    def usd_per_inr(fx: FXRatesResource) -> str:
        return str(fx.get_usd_rates(FRIDAY, ["INR"]).usd_per_unit["INR"])

    result = materialize(
        [usd_per_inr],
        resources={"fx": FXRatesResource(base_url=fx_server.url, breaker_storage_url=breaker_url)},
    )
    assert result.success
    assert Decimal(result.output_for_node("usd_per_inr")) > 0
