"""A local Frankfurter-compatible HTTP server for ECB rates, with fault injection.

It lets the pipeline, its tests and demos run with no network while still going through a real
HTTP client, and lets tests make that client meet the failures a public API produces: errors,
slowness, outages, hangs, rate limits and malformed answers.

API (the subset of https://frankfurter.dev that the pipeline uses):
- `GET /<YYYY-MM-DD>?from=USD&to=EUR,INR[&amount=1]` and `GET /latest?...` (`base=`/`symbols=`
  accepted as older names) -> `{"amount", "base", "date", "rates"}`.
- 404 `{"message": "not found"}` for a date before the history; 422 `{"message": ...}` for a bad
  date, currency or amount.

Control endpoints (never subject to faults, never counted in the stats):
- `GET /_faults`, `POST /_faults` with a JSON object of `FaultConfig` fields. The body replaces the
  whole configuration, so `{}` clears every fault; an outage window starts at the POST.
- `GET /_stats` -> `{"total": n, "by_status": {"200": n, "503": n, "hang": n}}`, and
  `POST /_stats/reset`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from regional_etl.fx import rates

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
ENV_PREFIX = "REGIONAL_ETL_FX_FAULT_"
# A hung request is released after this long even if the client never gives up, so a forgotten
# `hang` cannot pin threads forever.
MAX_HANG_SECONDS = 300.0
_DATE_PATH = re.compile(r"^/(\d{4}-\d{2}-\d{2})/?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclasses.dataclass(frozen=True)
class FaultConfig:
    """Failures the server injects into API requests (control endpoints are never affected).

    Precedence per request: latency first, then hang, outage, random errors, bad payload.
    """

    error_rate: float = 0.0  # fraction of requests answered with `status`, drawn from `seed`
    latency_ms: float = 0.0  # added before every answer
    outage_seconds: float = 0.0  # answer `status` to everything for this long after start/POST
    status: int = 503  # status used by outage and error_rate
    hang: bool = False  # never answer, until the client gives up or the server stops
    bad_payload: bool = False  # 200 with a JSON body that is not the Frankfurter shape
    retry_after: float | None = None  # Retry-After header (seconds) on injected 429/503
    seed: int | None = None  # makes error_rate draws reproducible

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within 0..1, got {self.error_rate}")
        for name in ("latency_ms", "outage_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {self.status}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be >= 0")

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> FaultConfig:
        """Build from a JSON object; unknown keys are an error, so typos do not pass silently."""
        known = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if value is None:
                continue
            if name in ("hang", "bad_payload"):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
                values[name] = value
            elif name in ("status", "seed"):
                values[name] = int(value)
            else:
                values[name] = float(value)
        return cls(**values)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> FaultConfig:
        """Read `REGIONAL_ETL_FX_FAULT_{ERROR_RATE,LATENCY_MS,OUTAGE_SECONDS,SEED}`."""
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        for name in ("error_rate", "latency_ms", "outage_seconds", "seed"):
            raw = env.get(ENV_PREFIX + name.upper(), "").strip()
            if raw:
                data[name] = raw
        return cls.from_mapping(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _FaultState:
    """The live fault configuration, its random stream and the request counters (thread-safe)."""

    def __init__(self, config: FaultConfig) -> None:
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._stats: Counter[str] = Counter()
        self._total = 0
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self._outage_until = time.monotonic() + config.outage_seconds

    def decide(self) -> tuple[FaultConfig, int | str | None]:
        """Pick this request's injected outcome: a status, "hang", "bad_payload" or None."""
        with self._lock:
            config = self.config
            if config.hang:
                return config, "hang"
            if time.monotonic() < self._outage_until:
                return config, config.status
            # Draw only when a rate is set, so a seed gives the same sequence for the same
            # number of API requests whatever else was configured.
            if config.error_rate > 0 and self._rng.random() < config.error_rate:
                return config, config.status
            if config.bad_payload:
                return config, "bad_payload"
            return config, None

    def record(self, outcome: int | str) -> None:
        with self._lock:
            self._total += 1
            self._stats[str(outcome)] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"total": self._total, "by_status": dict(sorted(self._stats.items()))}

    def reset_stats(self) -> None:
        with self._lock:
            self._total = 0
            self._stats.clear()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Quick restarts in tests must not fail on a port in TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], faults: _FaultState) -> None:
        super().__init__(address, _Handler)
        self.faults = faults


class _Handler(BaseHTTPRequestHandler):
    server: _Server  # narrowed from BaseServer, for the fault state
    protocol_version = "HTTP/1.1"
    server_version = "regional-etl-fx/1"

    def log_message(self, format: str, *args: Any) -> None:
        # Access logs go to logging (debug), not to stderr where they would drown test output.
        logger.debug("%s - %s", self.address_string(), format % args)

    # --- plumbing -------------------------------------------------------------------------
    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _read_json_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw.decode("utf-8")) if raw.strip() else {}

    # --- routes ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/_faults":
            self._send_json(200, self.server.faults.config.to_dict())
        elif parts.path == "/_stats":
            self._send_json(200, self.server.faults.stats())
        else:
            self._api(parts.path, parts.query)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        faults = self.server.faults
        if path == "/_faults":
            try:
                body = self._read_json_body()
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                config = FaultConfig.from_mapping(body)
            except (ValueError, TypeError) as exc:
                self._send_json(422, {"message": str(exc)})
                return
            faults.configure(config)
            logger.info("FX server faults set to %s", config.to_dict())
            self._send_json(200, config.to_dict())
        elif path == "/_stats/reset":
            faults.reset_stats()
            self._send_json(200, faults.stats())
        else:
            # The body was not read: do not let it be parsed as the next request.
            self.close_connection = True
            self._send_json(404, {"message": "not found"})

    def _api(self, path: str, query: str) -> None:
        faults = self.server.faults
        config, injected = faults.decide()
        if config.latency_ms:
            faults.stopping.wait(config.latency_ms / 1000.0)
        if injected == "hang":
            faults.record("hang")
            # Answer nothing: the client's read timeout is what ends this request.
            faults.stopping.wait(MAX_HANG_SECONDS)
            self.close_connection = True
            return
        if isinstance(injected, int):
            faults.record(injected)
            headers: dict[str, str] = {}
            if config.retry_after is not None and injected in (429, 503):
                headers["Retry-After"] = f"{config.retry_after:g}"
            self._send_json(injected, {"message": "injected fault"}, headers)
            return
        if injected == "bad_payload":
            faults.record(200)
            self._send_json(200, {"status": "ok", "data": [{"unexpected": True}]})
            return
        status, body = answer(path, parse_qs(query))
        faults.record(status)
        self._send_json(status, body)


def answer(path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    """The Frankfurter answer for one API request: (status, JSON body). Pure, for easy testing."""

    def param(*names: str) -> str | None:
        for name in names:
            if query.get(name):
                return query[name][-1]
        return None

    if path.rstrip("/") == "/latest":
        date = rates.history_end()
    else:
        match = _DATE_PATH.match(path)
        if not match:
            segment = path.strip("/")
            if not segment or "/" in segment:
                return 404, {"message": "not found"}
            return 422, {"message": f"invalid date {segment!r}: expected YYYY-MM-DD"}
        try:
            date = dt.date.fromisoformat(match.group(1))
        except ValueError:
            return 422, {"message": f"invalid date {match.group(1)!r}"}

    base = (param("from", "base") or rates.EUR).upper()
    symbols_raw = param("to", "symbols")
    symbols = (
        [s.strip().upper() for s in symbols_raw.split(",") if s.strip()] if symbols_raw else []
    )
    for code in [base, *symbols]:
        if not _CURRENCY.match(code):
            return 422, {"message": f"invalid currency {code!r}"}
    try:
        amount = Decimal(param("amount") or "1")
        if not amount.is_finite() or amount <= 0 or amount > Decimal("1e12"):
            raise InvalidOperation
    except InvalidOperation:
        return 422, {"message": f"invalid amount {param('amount')!r}"}

    try:
        rate_date, found = rates.rates_for(date, base, symbols, amount=amount)
    except rates.DateBeforeHistoryError:
        return 404, {"message": "not found"}
    except rates.UnknownCurrencyError as exc:
        return 422, {"message": str(exc)}
    return 200, {
        "amount": float(amount),
        "base": base,
        "date": rate_date.isoformat(),
        "rates": {code: float(value) for code, value in found.items()},
    }


class FXServer:
    """The FX server on a background thread: `with FXServer() as server: server.url`.

    Binds 127.0.0.1 only. `port=0` picks a free port. `faults=None` reads the fault settings from
    the `REGIONAL_ETL_FX_FAULT_*` environment variables.
    """

    def __init__(
        self, port: int = 0, host: str = DEFAULT_HOST, faults: FaultConfig | None = None
    ) -> None:
        self._address = (host, port)
        self._faults = _FaultState(faults if faults is not None else FaultConfig.from_env())
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FXServer:
        if self._httpd is not None:
            return self
        # Parse the history before accepting requests, so the first request is not the slow one.
        rates.load_history()
        self._faults.stopping.clear()
        self._httpd = _Server(self._address, self._faults)
        # Restart the outage window at start, not at construction.
        self._faults.configure(self._faults.config)
        # A short poll interval keeps stop() (which waits for the next poll) fast in tests.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fx-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("FX server listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._faults.stopping.set()  # release hung and delayed requests
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the FX server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:54321` (no trailing slash)."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def faults(self) -> FaultConfig:
        return self._faults.config

    def set_faults(self, config: FaultConfig) -> None:
        """In-process equivalent of `POST /_faults`."""
        self._faults.configure(config)

    def stats(self) -> dict[str, Any]:
        """In-process equivalent of `GET /_stats`."""
        return self._faults.stats()

    def __enter__(self) -> FXServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_server(port: int, host: str = DEFAULT_HOST) -> None:
    """Serve until interrupted (the `regional-etl fx-server` command)."""
    server = FXServer(port=port, host=host).start()
    print(f"FX server listening on {server.url} (ECB history to {rates.history_end()})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


serve_forever = run_server
