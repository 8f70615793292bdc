"""A fault-injecting FX server for tests and demos: the product's Frankfurter server, plus the
failures a public API produces (errors, slowness, outages, hangs, rate limits, bad answers).

Control endpoints, never subject to faults and never counted in the stats:
- `GET /_faults`; `POST /_faults` with a JSON object of `FaultConfig` fields, which replaces the
  whole configuration (`{}` clears every fault; an outage starts at the POST);
- `GET /_stats` -> `{"total": n, "by_status": {"200": n, "503": n, "hang": n}}`;
  `POST /_stats/reset`.

`python -m regional_etl_tests.fx_faults --port 8765` serves it for a demo of the breaker.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import threading
import time
from collections import Counter
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from regional_etl.fx.server import FXRequestHandler, FXServer, answer

# A hung request is released after this long even if the client never gives up.
MAX_HANG_SECONDS = 300.0


@dataclasses.dataclass(frozen=True)
class FaultConfig:
    """Failures injected into API requests. Per request: latency first, then hang, outage, random
    errors, bad payload."""

    error_rate: float = 0.0  # fraction of requests answered with `status`, drawn from `seed`
    latency_ms: float = 0.0  # added before every answer
    outage_seconds: float = 0.0  # answer `status` to everything for this long after start/POST
    status: int = 503  # status of outage and error_rate answers
    hang: bool = False  # never answer, until the client gives up or the server stops
    bad_payload: bool = False  # 200 with a JSON body that is not the Frankfurter shape
    malformed_json: bool = False  # 200 with a body cut off mid-JSON
    missing_currency: str | None = None  # the answer leaves out this currency's rate
    rates: dict[str, float] | None = None  # these rates replace the real ones (0, negative...)
    retry_after: float | None = None  # Retry-After header (seconds) on injected 429/503
    seed: int | None = None  # makes error_rate draws reproducible

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within 0..1, got {self.error_rate}")
        if min(self.latency_ms, self.outage_seconds, self.retry_after or 0) < 0:
            raise ValueError("latency_ms, outage_seconds and retry_after must be >= 0")
        if not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {self.status}")

    @classmethod
    def from_json(cls, data: Any) -> FaultConfig:
        """From a JSON object; unknown fields are an error, so typos do not pass silently."""
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        return cls(**{name: value for name, value in data.items() if value is not None})


class FaultState:
    """The live configuration, its random stream and the request counters (thread-safe)."""

    def __init__(self, config: FaultConfig) -> None:
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.counts: Counter[str] = Counter()
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        with self.lock:
            self.config = config
            self.rng = random.Random(config.seed)
            self.outage_until = time.monotonic() + config.outage_seconds

    def decide(self) -> tuple[FaultConfig, int | str | None]:
        """This request's injected outcome: a status, "hang", "bad_payload", "malformed_json"
        or None (the real answer, with `missing_currency` and `rates` applied)."""
        with self.lock:
            config = self.config
            if config.hang:
                return config, "hang"
            if time.monotonic() < self.outage_until:
                return config, config.status
            # Draw only when a rate is set, so a seed gives the same sequence for the same
            # number of API requests whatever else is configured.
            if config.error_rate > 0 and self.rng.random() < config.error_rate:
                return config, config.status
            if config.malformed_json:
                return config, "malformed_json"
            return config, "bad_payload" if config.bad_payload else None

    def record(self, outcome: int | str) -> None:
        with self.lock:
            self.counts[str(outcome)] += 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"total": self.counts.total(), "by_status": dict(sorted(self.counts.items()))}


class FaultHandler(FXRequestHandler):
    """The product's answers, after the faults and the control endpoints."""

    server: FaultyFXServer  # narrowed from BaseServer, for the fault state

    def do_GET(self) -> None:
        state, parts = self.server.state, urlsplit(self.path)
        if parts.path in ("/_faults", "/_stats"):
            control = parts.path == "/_faults"
            self.send_json(200, dataclasses.asdict(state.config) if control else state.stats())
            return
        config, injected = state.decide()
        state.stopping.wait(config.latency_ms / 1000.0)
        if injected == "hang":
            state.record("hang")
            state.stopping.wait(MAX_HANG_SECONDS)  # the client's timeout is what ends it
            self.close_connection = True
        elif isinstance(injected, int):
            state.record(injected)
            retry_after = config.retry_after is not None and injected in (429, 503)
            headers = {"Retry-After": f"{config.retry_after:g}"} if retry_after else {}
            self.send_json(injected, {"message": "injected fault"}, headers)
        elif injected == "bad_payload":
            state.record(200)
            self.send_json(200, {"status": "ok", "data": [{"unexpected": True}]})
        elif injected == "malformed_json":
            state.record(200)
            payload = b'{"amount": 1.0, "base": "USD", "rates": {"EUR": 0.9'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        else:
            status, body = answer(parts.path, parse_qs(parts.query))
            if status == 200 and isinstance(body.get("rates"), dict):
                rates = {**body["rates"], **(config.rates or {})}
                rates.pop(config.missing_currency or "", None)
                body = {**body, "rates": rates}
            state.record(status)
            self.send_json(status, body)

    def do_POST(self) -> None:
        state, path = self.server.state, urlsplit(self.path).path
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == "/_stats/reset":
            with state.lock:
                state.counts.clear()
            self.send_json(200, state.stats())
        elif path != "/_faults":
            self.send_json(404, {"message": "not found"})
        else:
            try:
                config = FaultConfig.from_json(json.loads(raw or b"{}"))
            except (ValueError, TypeError) as exc:
                self.send_json(422, {"message": str(exc)})
                return
            state.configure(config)
            self.send_json(200, dataclasses.asdict(config))


class FaultyFXServer(FXServer):
    """`FXServer` with `FaultConfig` faults, set in-process (`set_faults`) or over HTTP."""

    handler = FaultHandler

    def __init__(self, faults: FaultConfig | None = None, port: int = 0) -> None:
        self.state = FaultState(faults or FaultConfig())
        super().__init__(port)

    def start(self) -> Self:
        self.state.configure(self.state.config)  # the outage window starts now
        return super().start()

    def stop(self) -> None:
        self.state.stopping.set()  # releases hung and delayed requests
        super().stop()

    def set_faults(self, config: FaultConfig) -> None:
        """In-process equivalent of `POST /_faults`."""
        self.state.configure(config)

    def stats(self) -> dict[str, Any]:
        """In-process equivalent of `GET /_stats`."""
        return self.state.stats()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="FX server with fault injection, for demos")
    parser.add_argument("--port", type=int, default=8765)
    with FaultyFXServer(port=parser.parse_args().port) as server:
        print(f"FX server with faults at {server.url}; POST /_faults to inject", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
