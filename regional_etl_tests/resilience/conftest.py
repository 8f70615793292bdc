"""Fixtures for the resilience tests: fast FX resources on the test's own FX server and breaker
file (both from the root conftest), run-log helpers, and a real local webhook receiver for
alerts."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, EventLogEntry

from regional_etl.resources.fx import FXRatesResource
from regional_etl.resources.warehouse import WarehouseResource
from regional_etl.spark.resource import SparkResource
from regional_etl_tests.conftest import FAST_FX_CLIENT, TEST_SPARK_CONF
from regional_etl_tests.fx_faults import FaultyFXServer

# A Friday: one FX request per run (a weekend date also asks for the latest business day).
DATE = "2024-03-15"


MakeResources = Callable[..., dict[str, Any]]


@pytest.fixture
def make_resources(tmp_path: Path, fx_server: FaultyFXServer, breaker_url: str) -> MakeResources:
    """Resources for `fx_rates` runs: the test's FX server with fast client retries, Delta tables
    in tmp_path, and the shared Spark session (started only by runs that write)."""

    def make(**fx_overrides: Any) -> dict[str, Any]:
        fx_config: dict[str, Any] = {
            "base_url": fx_server.url,
            "breaker_storage_url": breaker_url,
            **FAST_FX_CLIENT,
        }
        return {
            "spark": SparkResource(session_config=TEST_SPARK_CONF),
            "warehouse": WarehouseResource(
                landing_root=str(tmp_path / "landing"), warehouse_root=str(tmp_path / "warehouse")
            ),
            "fx": FXRatesResource(**(fx_config | fx_overrides)),
        }

    return make


def run_logs(
    instance: DagsterInstance, run_id: str, event_type: DagsterEventType | None = None
) -> list[EventLogEntry]:
    if event_type is None:
        return list(instance.all_logs(run_id))
    return list(instance.all_logs(run_id, of_type=event_type))


def log_messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in run_logs(instance, run_id)]


def step_failure_description(instance: DagsterInstance, run_id: str) -> str:
    """The description of the run's one STEP_FAILURE (what a user reads first in the UI)."""
    (entry,) = run_logs(instance, run_id, DagsterEventType.STEP_FAILURE)
    assert entry.dagster_event is not None
    data = entry.dagster_event.step_failure_data
    assert data.user_failure_data is not None, data.error
    return data.user_failure_data.description or ""


def observed_transitions(instance: DagsterInstance, run_id: str) -> list[str]:
    """The `fx_rates` breaker observations of one run: `closed -> open`, ... (times dropped)."""
    found = []
    for entry in run_logs(instance, run_id, DagsterEventType.ASSET_OBSERVATION):
        assert entry.dagster_event is not None
        observation = entry.dagster_event.asset_observation_data.asset_observation
        assert observation.asset_key.to_user_string() == "fx_rates"
        text = str(observation.metadata["transition"].value)
        found.append(text.split(" at ")[0])
    return found


@dataclass
class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records every POST; answers from `statuses`, then
    200."""

    url: str
    statuses: list[int]
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    lock = threading.Lock()
    receiver = WebhookReceiver(url="", statuses=[])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with lock:
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.received.append(
                    {
                        "path": self.path,
                        "content_type": self.headers.get("Content-Type"),
                        "body": json.loads(body),
                        "answered": status,
                    }
                )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/regional-etl?token=s3cret"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
