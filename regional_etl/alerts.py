"""Failure alerts: a run failure sensor that posts a JSON notification to a webhook.

`run_failure_alert` watches every run on the instance and is on by default: the jobs of this
code location, runs launched from the asset graph, and the runs `regional-etl backfill` executes
in its own process (those carry no code-location origin, so a sensor scoped to the code location
would never see them; the instance serves this one code location). For each failed run it POSTs
one JSON object to `AlertWebhookResource.url` (env `REGIONAL_ETL_ALERT_WEBHOOK_URL`):

    {"event": "run_failure", "job_name": ..., "run_id": ..., "partition": ...,
     "partition_tags": {"dagster/partition": ...}, "error": ..., "step_failures": [...],
     "retry_number": 0, "will_retry": false, "link": "/runs/<run_id>",
     "url": "<ui base>/runs/<run_id>" or null, ...}

Slack incoming webhooks, Teams or any HTTP receiver can take it (a thin relay may reshape it).
Without a URL the sensor only logs the alert on its tick. Delivery has a timeout and a small
retry; an alert that still cannot be delivered fails the sensor tick, with the reason, in the UI.

Step retries are not failures and send nothing: Dagster has no hook for them (its hooks fire on
step success or failure only), so they show in the run log as STEP_UP_FOR_RETRY events, each
after a line from the step saying why it is retried (see `assets/reference.py`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from dagster import (
    ConfigurableResource,
    DagsterEvent,
    DefaultSensorStatus,
    EnvVar,
    RunFailureSensorContext,
    get_dagster_logger,
    run_failure_sensor,
)
from pydantic import Field

ALERT_WEBHOOK_ENV = "REGIONAL_ETL_ALERT_WEBHOOK_URL"
DAGSTER_UI_URL_ENV = "REGIONAL_ETL_DAGSTER_UI_URL"
PARTITION_TAG_PREFIX = "dagster/partition"
RANGE_TAG_PREFIX = "dagster/asset_partition_range_"
RETRY_NUMBER_TAG = "dagster/retry_number"
WILL_RETRY_TAG = "dagster/will_retry"  # set on failure when run retries are enabled
USER_AGENT = "regional-etl-alerts/1"
MAX_ERROR_CHARS = 2_000
_WRAPPER_ERRORS = {
    "DagsterExecutionStepExecutionError",
    "RetryRequestedFromPolicy",
    "RetryRequested",
    "DagsterMaxRetriesExceededError",
}


class AlertDeliveryError(Exception):
    """The webhook did not accept the alert after every attempt."""


@dataclass(frozen=True)
class AlertDelivery:
    """What the webhook answered: its status and how many POSTs it took."""

    url: str  # redacted: scheme, host and port only
    status: int
    attempts: int


class AlertWebhookResource(ConfigurableResource):
    """Where failure alerts go: a webhook that accepts a JSON POST (Slack, Teams, a relay).

    Unset URL: alerts are only logged. Each POST has a timeout; connection errors, timeouts, 429
    and 5xx are retried with a short exponential backoff, other 4xx are not (the request itself
    is wrong, asking again will not help).
    """

    url: str | None = Field(
        default=None,
        description=(
            "Webhook URL for failure alerts (env REGIONAL_ETL_ALERT_WEBHOOK_URL). Unset: alerts "
            "are only written to the sensor's log."
        ),
    )
    ui_base_url: str | None = Field(
        default=None,
        description=(
            "Base URL of the Dagster UI, e.g. http://127.0.0.1:3000 (env "
            "REGIONAL_ETL_DAGSTER_UI_URL), to send a full link to the run besides its path."
        ),
    )
    timeout_seconds: float = Field(default=5.0, description="Timeout of each POST, in seconds.")
    max_attempts: int = Field(default=3, description="POSTs per alert, the first one included.")
    backoff_seconds: float = Field(
        default=0.5, description="Wait before the first retry; doubles for each further one."
    )

    def run_url(self, link: str) -> str | None:
        """The full UI URL for a path like `/runs/<id>`, if the UI base URL is known."""
        return f"{self.ui_base_url.rstrip('/')}{link}" if self.ui_base_url else None

    def send(self, payload: dict[str, Any], log: Any = None) -> AlertDelivery | None:
        """POST `payload` as JSON; None when no URL is configured. Raises `AlertDeliveryError`.

        `log` gets the retry warnings (a sensor passes `context.log`, so they show on its tick).
        """
        if not self.url:
            return None
        body = json.dumps(payload, sort_keys=True, default=str).encode("utf-8")
        log = log or get_dagster_logger()
        where = redact_url(self.url)
        last = ""
        attempts = max(self.max_attempts, 1)
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                    return AlertDelivery(where, response.status, attempt)
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code} {exc.reason}"
                if exc.code != 429 and exc.code < 500:
                    raise AlertDeliveryError(
                        f"alert webhook {where} refused the alert: {last} (not retried)"
                    ) from exc
            except OSError as exc:  # URLError, timeouts, refused or reset connections
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if attempt < attempts:
                delay = self.backoff_seconds * 2 ** (attempt - 1)
                log.warning(
                    f"alert webhook {where} failed ({last}); retry {attempt}/{attempts - 1} "
                    f"in {delay:.2f}s"
                )
                time.sleep(delay)
        raise AlertDeliveryError(
            f"alert webhook {where} failed {attempts} attempt(s); last error: {last}"
        )


def redact_url(url: str) -> str:
    """`https://hooks.example.com/...`: webhook paths and queries often hold a token, never log
    them."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    rest = "/..." if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def alert_resources() -> dict[str, AlertWebhookResource]:
    """The resources the alert sensor needs, from the environment (add them to Definitions)."""
    return {
        "alert_webhook": AlertWebhookResource(
            # EnvVar, so that the UI shows the variable's name and not the URL (it may hold a
            # token); only when set, because an unset EnvVar is an error at resource init.
            url=EnvVar(ALERT_WEBHOOK_ENV) if os.environ.get(ALERT_WEBHOOK_ENV) else None,
            ui_base_url=os.environ.get(DAGSTER_UI_URL_ENV) or None,
        )
    }


def failure_payload(
    context: RunFailureSensorContext, webhook: AlertWebhookResource
) -> dict[str, Any]:
    """The JSON notification for one failed run."""
    run = context.dagster_run
    tags = dict(run.tags)
    link = f"/runs/{run.run_id}"
    steps = [
        {"step_key": event.step_key, "error": _step_error(event)}
        for event in context.get_step_failure_events()
    ]
    run_error = context.failure_event.message or ""
    error = "; ".join(f"{s['step_key']}: {s['error']}" for s in steps) or run_error
    return {
        "event": "run_failure",
        "job_name": run.job_name,
        "run_id": run.run_id,
        "status": run.status.value,
        "partition": tags.get(PARTITION_TAG_PREFIX),
        "partition_tags": {
            key: value
            for key, value in sorted(tags.items())
            if key.startswith((PARTITION_TAG_PREFIX, RANGE_TAG_PREFIX))
        },
        "retry_number": int(tags.get(RETRY_NUMBER_TAG, 0)),
        # True when the daemon will re-execute this run itself (run_retries in dagster.yaml).
        "will_retry": tags.get(WILL_RETRY_TAG) == "true",
        "error": error[:MAX_ERROR_CHARS],
        "run_error": run_error[:MAX_ERROR_CHARS],
        "step_failures": steps,
        "link": link,
        "url": webhook.run_url(link),
        "sensor": context.sensor_name,
        "sent_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def _step_error(event: DagsterEvent) -> str:
    """The clearest message of a STEP_FAILURE: a Failure's description, else the error text."""
    data = event.step_failure_data
    user = data.user_failure_data
    if user is not None and user.description:
        return user.description[:MAX_ERROR_CHARS]
    error = data.error
    # "Error occurred while executing op" or "Exceeded max_retries" say less than their cause.
    while error is not None and error.cause is not None and error.cls_name in _WRAPPER_ERRORS:
        error = error.cause
    return (error.message.strip() if error is not None else event.message or "")[:MAX_ERROR_CHARS]


@run_failure_sensor(
    name="run_failure_alert",
    description=(
        "Posts a JSON alert (job, run id, partition, error, link to the run) to the webhook in "
        "REGIONAL_ETL_ALERT_WEBHOOK_URL for every failed run on the instance (UI, schedules, "
        "sensors, `regional-etl backfill`); without it, only logs the alert."
    ),
    default_status=DefaultSensorStatus.RUNNING,
    # Also the in-process runs of `regional-etl backfill`, which have no code-location origin.
    monitor_all_code_locations=True,
    minimum_interval_seconds=30,
)
def run_failure_alert(
    context: RunFailureSensorContext, alert_webhook: AlertWebhookResource
) -> None:
    """Alert on every failed run (on by default)."""
    payload = failure_payload(context, alert_webhook)
    summary = (
        f"run {payload['run_id']} of {payload['job_name']}"
        f"{' partition ' + payload['partition'] if payload['partition'] else ''} failed"
        f"{' (Dagster will retry the run)' if payload['will_retry'] else ''}: "
        f"{payload['error'][:300]}"
    )
    delivery = alert_webhook.send(payload, log=context.log)
    if delivery is None:
        context.log.warning(f"Alert not sent ({ALERT_WEBHOOK_ENV} is unset): {summary}")
    else:
        context.log.info(
            f"Alert sent to {delivery.url} (HTTP {delivery.status}, {delivery.attempts} "
            f"attempt(s)): {summary}"
        )


ALERT_SENSORS = [run_failure_alert]
