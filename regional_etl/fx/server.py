"""`regional-etl fx-server`: the bundled ECB rates over a Frankfurter-compatible HTTP API on
127.0.0.1, for demos, benchmarks and tests of the HTTP client; runs read them in-process.

The subset of https://frankfurter.dev the client uses: `GET /<YYYY-MM-DD>` or `GET /latest`
with `from=USD&to=EUR,INR` (or `base=`/`symbols=`) and `amount=` -> `{"amount", "base", "date",
"rates"}`; 404 before the history, 422 for a bad date, currency or amount, with a `message`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from regional_etl.fx import rates

logger = logging.getLogger(__name__)


def answer(path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    """The Frankfurter answer to one API request: (status, JSON body)."""

    def param(*names: str) -> str | None:
        return next((query[name][-1] for name in names if query.get(name)), None)

    day = path.strip("/")
    if not day or "/" in day:
        return 404, {"message": "not found"}
    try:
        date = rates.history_end() if day == "latest" else dt.date.fromisoformat(day)
    except ValueError:
        return 422, {"message": f"invalid date {day!r}: expected YYYY-MM-DD"}
    base = (param("from", "base") or rates.EUR).upper()
    symbols = [s.strip().upper() for s in (param("to", "symbols") or "").split(",") if s.strip()]
    try:
        amount = Decimal(param("amount") or "1")
        if not amount.is_finite() or not 0 < amount <= Decimal("1e12"):
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


class FXRequestHandler(BaseHTTPRequestHandler):
    """Answers the Frankfurter API."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)  # not stderr, where access logs would drown test output

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.send_json(*answer(parts.path, parse_qs(parts.query)))


class FXServer(ThreadingHTTPServer):
    """The FX server on 127.0.0.1, served from a background thread: `with FXServer() as server:
    server.url`. `port=0` picks a free port; a subclass may answer with its own `handler`."""

    handler: type[FXRequestHandler] = FXRequestHandler

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), self.handler)

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:54321` (no trailing slash)."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> Self:
        rates.load_history()  # parsed before the first request, so that one is not the slow one
        # A short poll interval keeps stop(), which waits for the next poll, fast.
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
