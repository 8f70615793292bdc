"""Failure alerts: a run failure sensor that POSTs a JSON notification to a webhook (the payload
is shown in docs/resilience.md).

`run_failure_alert` is on by default and watches every run on the instance, the runs that
`regional-etl backfill` executes in its own process included: those carry no code-location
origin, so a sensor scoped to the code location would never see them. Step retries send nothing:
Dagster has no hook for them; they show in the run log as STEP_UP_FOR_RETRY events.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from dataclasses import dataclass
from typing import Any

from dagster import (
    ConfigurableResource,
    DagsterEvent,
    DefaultSensorStatus,
    RunFailureSensorContext,
    get_dagster_logger,
    run_failure_sensor,
)
from pydantic import Field

from regional_etl import http, settings

PARTITION_TAG_PREFIX = "dagster/partition"
RANGE_TAG_PREFIX = "dagster/asset_partition_range_"
RETRY_NUMBER_TAG = "dagster/retry_number"
WILL_RETRY_TAG = "dagster/will_retry"  # set on failure when run retries are enabled
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
    max_attempts: int = Field(
        default=3, ge=1, description="POSTs per alert, the first one included."
    )
    backoff_seconds: float = Field(
        default=0.5,
        description="Retry n waits this x 2^(n-1), plus as much jitter (the first goes at once).",
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
        where = redact_url(self.url)
        result = http.send(
            "POST",
            self.url,
            what=f"alert webhook {where}",
            log=log or get_dagster_logger(),
            attempts=self.max_attempts,
            timeout=self.timeout_seconds,
            backoff_seconds=self.backoff_seconds,
            backoff_max_seconds=30.0,
            json=payload,
        )
        if result.response is not None and not result.failure:
            return AlertDelivery(where, result.response.status_code, result.attempts)
        if not result.transient:
            raise AlertDeliveryError(
                f"alert webhook {where} refused the alert: {result.failure} (not retried)"
            )
        raise AlertDeliveryError(
            f"alert webhook {where} failed {result.attempts} attempt(s); last error: "
            f"{result.failure}"
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
            # An EnvVar when set, so the UI shows the variable's name and not the URL, which may
            # hold a token.
            url=settings.configured(settings.ALERT_WEBHOOK_URL),
            ui_base_url=settings.configured(settings.DAGSTER_UI_URL),
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
        context.log.warning(
            f"Alert not sent ({settings.ALERT_WEBHOOK_URL.name} is unset): {summary}"
        )
    else:
        context.log.info(
            f"Alert sent to {delivery.url} (HTTP {delivery.status}, {delivery.attempts} "
            f"attempt(s)): {summary}"
        )


ALERT_SENSORS = [run_failure_alert]
