"""The fault-injecting test server: its faults, over HTTP and in-process, on real sockets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import time

import pytest

from regional_etl_tests.fx_faults import FaultConfig, FaultyFXServer

from .conftest import ServerControl

FRIDAY = dt.date(2024, 3, 15)


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
    assert fx_control.request("/_faults")[1] == dataclasses.asdict(FaultConfig())


def test_seeded_error_rate_is_reproducible():
    def statuses() -> list[int]:
        with FaultyFXServer(FaultConfig(error_rate=0.5, seed=11)) as server:
            control = ServerControl(server.url)
            return [control.request(f"/{FRIDAY}?from=USD&to=INR")[0] for _ in range(20)]

    first = statuses()
    assert first == statuses()
    assert {200, 503} == set(first)


def test_outage_ends_and_latency_delays(fx_control: ServerControl):
    fx_control.set_faults(outage_seconds=0.3, latency_ms=50)
    started = time.monotonic()
    assert fx_control.request(f"/{FRIDAY}?from=USD&to=INR")[0] == 503
    assert time.monotonic() - started >= 0.05
    time.sleep(0.35)
    assert fx_control.request(f"/{FRIDAY}?from=USD&to=INR")[0] == 200


def test_bad_payload_is_200_without_the_frankfurter_shape(fx_control: ServerControl):
    fx_control.set_faults(bad_payload=True)
    status, body, _ = fx_control.request(f"/{FRIDAY}?from=USD&to=INR")
    assert status == 200 and "rates" not in body


def test_hang_never_answers_and_stop_releases_it():
    server = FaultyFXServer(FaultConfig(hang=True)).start()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=0.3) as sock:
        sock.sendall(b"GET /latest HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(1024)
    server.stop()
    assert time.monotonic() - started < 3
    assert server.stats() == {"total": 1, "by_status": {"hang": 1}}
