"""HTTP with retries, shared by the FX client and the alert webhook: `requests` with urllib3's
`Retry` (transient statuses, exponential backoff with jitter, Retry-After honoured)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

# Worth asking again: the server is overloaded, failing or rate-limiting. Other 4xx are not.
TRANSIENT_STATUSES = frozenset({429, *range(500, 600)})
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Result:
    """How a request ended: its last response (None: the last attempt got no answer), what went
    wrong ("" for a success, else e.g. `HTTP 503: overloaded`), and the attempts it took."""

    response: requests.Response | None
    failure: str
    attempts: int

    @property
    def transient(self) -> bool:
        """Whether asking again later may help."""
        return self.response is None or self.response.status_code in TRANSIENT_STATUSES


class _ReportingRetry(Retry):
    """urllib3's `Retry`, which reports each retry before its wait and caps a Retry-After at
    `backoff_max`, so that a server cannot hold a step for hours."""

    report: Callable[[str, float], None] = staticmethod(lambda failure, delay: None)

    def new(self, **kw: Any) -> Self:
        retry = super().new(**kw)
        retry.report = self.report
        return retry

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        try:
            retry_after = self.get_retry_after(response) if response is not None else None
        except InvalidHeader:
            retry_after = None
        delay = min(retry_after, self.backoff_max) if retry_after else self.get_backoff_time()
        last = self.history[-1] if self.history else None  # the failure that led here
        status = last and last.status
        self.report(f"HTTP {status}" if status else failure_reason(last and last.error), delay)
        time.sleep(delay)


def send(
    method: str,
    url: str,
    *,
    what: str,
    log: Any,
    attempts: int,
    timeout: float,
    backoff_seconds: float,
    backoff_max_seconds: float,
    **kwargs: Any,
) -> Result:
    """Up to `attempts` requests while the connection fails or the status is transient. Retry n
    waits `backoff_seconds * 2**(n-1)` (the first none) plus up to `backoff_seconds` of jitter,
    or the server's Retry-After, at most `backoff_max_seconds`. `log` gets one warning per retry:
    `<what> failed (HTTP 503); retry 1/3 in 0.42s`.
    """
    retries = 0

    def report(failure: str, delay: float) -> None:
        nonlocal retries
        retries += 1
        log.warning(f"{what} failed ({failure}); retry {retries}/{attempts - 1} in {delay:.2f}s")

    retry = _ReportingRetry(
        total=attempts - 1,
        allowed_methods=None,  # POST too: a duplicate alert is better than a lost one
        status_forcelist=TRANSIENT_STATUSES,
        backoff_factor=backoff_seconds,
        backoff_jitter=backoff_seconds,
        backoff_max=backoff_max_seconds,
        raise_on_status=False,
    )
    retry.report = report
    with requests.Session() as session:
        # A proxy from the environment must not capture requests to a local server.
        session.trust_env = urlsplit(url).hostname not in _LOOPBACK_HOSTS
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        try:
            response = session.request(method, url, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            return Result(None, failure_reason(exc), retries + 1)
    failure = "" if response.ok else f"HTTP {response.status_code}: {error_detail(response)}"
    return Result(response, failure, retries + 1)


def failure_reason(error: BaseException | None) -> str:
    """`ReadTimeoutError: ... Read timed out.`: what an attempt failed with."""
    if isinstance(error, requests.RequestException) and error.args:
        # requests wraps urllib3's MaxRetryError, whose `reason` is the last attempt's error.
        error = getattr(error.args[0], "reason", error)
    return f"{type(error).__name__}: {error}"


def error_detail(response: requests.Response) -> str:
    """The server's own words for an error: its JSON `message`, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return response.text[:200] or response.reason
