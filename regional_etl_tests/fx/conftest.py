"""Fixtures for the FX tests: a real fault-injecting server on a free port, a real SQLite breaker
file, and the raw ECB CSV read independently of `regional_etl.fx.rates` to compute expectations."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from currency_converter.currency_converter import CURRENCY_FILE
from dagster import build_init_resource_context

from regional_etl.resources.fx import FXRatesResource
from regional_etl_tests.conftest import FAST_FX_CLIENT
from regional_etl_tests.fx_faults import FaultyFXServer

EcbRows = dict[dt.date, dict[str, str]]


class ServerControl:
    """Talks to a running FX server over HTTP, as a client or a demo script would."""

    def __init__(self, url: str) -> None:
        self.url = url

    def request(
        self, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, parsed JSON body, headers) for GET, or POST when `body` is given."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method="GET" if data is None else "POST"
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)

    def set_faults(self, **fields: Any) -> dict[str, Any]:
        status, body, _ = self.request("/_faults", fields)
        assert status == 200, body
        return body

    def stats(self) -> dict[str, Any]:
        return self.request("/_stats")[1]

    def reset_stats(self) -> None:
        self.request("/_stats/reset", {})


@pytest.fixture(scope="session")
def ecb_rows() -> EcbRows:
    """The bundled ECB history as raw strings, parsed here with csv.DictReader."""
    with zipfile.ZipFile(CURRENCY_FILE) as archive:
        text = archive.read("eurofxref-hist.csv").decode()
    return {
        dt.date.fromisoformat(row["Date"]): {
            k: v for k, v in row.items() if k and v not in ("", "N/A")
        }
        for row in csv.DictReader(io.StringIO(text))
    }


@pytest.fixture
def fx_control(fx_server: FaultyFXServer) -> ServerControl:
    return ServerControl(fx_server.url)


MakeResource = Callable[..., FXRatesResource]


@pytest.fixture
def make_resource(fx_server: FaultyFXServer, breaker_url: str) -> MakeResource:
    """Build and set up resources pointed at `fx_server`, with fast retries."""

    def make(**overrides: Any) -> FXRatesResource:
        config: dict[str, Any] = {
            "base_url": fx_server.url,
            "breaker_storage_url": breaker_url,
            **FAST_FX_CLIENT,
            "breaker_fail_max": 5,
            "breaker_reset_timeout_seconds": 60.0,
        }
        resource = FXRatesResource(**(config | overrides))
        resource.setup_for_execution(build_init_resource_context())
        return resource

    return make
