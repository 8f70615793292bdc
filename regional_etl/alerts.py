"""Failure alerts: `run_failure_alert`, a sensor that POSTs a JSON notification to a webhook for
every failed run (the payload is shown in docs/resilience.md).

It is on by default and reads the instance's RUN_FAILURE events itself, after a cursor of its own
(the storage id of the last one it handled), so it sees every run on the instance, the runs that
`regional-etl backfill` executes in its own process included (they carry no code-location
origin), and its first tick can look back ALERT_LOOKBACK. Step retries send nothing: Dagster has
no hook for them; they show in the run log as STEP_UP_FOR_RETRY events.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from dataclasses import dataclass
from typing import Any

from dagster import (
    ConfigurableResource,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DefaultSensorStatus,
    RunStatusChangeRecordsFilter,
    SensorEvaluationContext,
    SensorResult,
    get_dagster_logger,
    sensor,
)
from pydantic import Field

from regional_etl import settings
from regional_etl.io import http_retry

PARTITION_TAG_PREFIX = "dagster/partition"
BACKFILL_TAG = "dagster/backfill"
# Dagster's own jobs (`__ASSET_JOB` for a run launched from the asset graph, the ephemeral job of
# `materialize`) are names no user has heard of.
HIDDEN_JOB_PREFIX = "__"
RANGE_TAG_PREFIX = "dagster/asset_partition_range_"
RETRY_NUMBER_TAG = "dagster/retry_number"
WILL_RETRY_TAG = "dagster/will_retry"  # set on failure when run retries are enabled
MAX_ERROR_CHARS = 2_000
# On its first tick (a new instance, a new deployment, a reset cursor) the sensor alerts the runs
# that failed within this window before it, not only those that fail from then on.
ALERT_LOOKBACK = dt.timedelta(hours=24)
# Failures handled per tick, so a tick after a mass failure stays short; the rest wait for the
# next one.
ALERTS_PER_TICK = 50
# Set on a failed run once its alert went out (or was logged): never alerted twice, even by a
# first tick that looks back over it again.
ALERTED_TAG = "regional_etl/alerted_at"
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
        result = http_retry.send(
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
    instance: DagsterInstance,
    run: DagsterRun,
    run_error: str,
    webhook: AlertWebhookResource,
    sensor_name: str,
) -> dict[str, Any]:
    """The JSON notification for one failed run; `text` is its one-line headline. `run_error`
    is the message of the run's RUN_FAILURE event."""
    tags = dict(run.tags)
    link = f"/runs/{run.run_id}"
    url = webhook.run_url(link)
    steps = [
        {"step_key": event.step_key, "error": _step_error(event)}
        for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
        if (event := entry.dagster_event) is not None
    ]
    error = "; ".join(f"{s['step_key']}: {s['error']}" for s in steps) or run_error
    failed = failed_asset_partitions(instance, run, {s["step_key"] for s in steps if s["step_key"]})
    assets = sorted(failed)
    partitions = sorted({p for keys in failed.values() for p in keys})
    backfill_id = tags.get(BACKFILL_TAG)
    return {
        "event": "run_failure",
        "text": headline(run, failed, backfill_id, steps, run_error, url or link),
        "job": job_title(run, assets),
        "job_name": run.job_name,
        "run_id": run.run_id,
        "status": run.status.value,
        "assets": assets,
        "partitions": partitions,
        "backfill_id": backfill_id,
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
        "url": url,
        "sensor": sensor_name,
        "sent_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def failed_asset_partitions(
    instance: DagsterInstance, run: DagsterRun, failed_steps: set[str]
) -> dict[str, list[str]]:
    """asset -> the partitions that this run planned in a step that failed and did not
    materialize: in a range run, not the whole range, and not the assets skipped because an
    upstream step failed (that step has its own entry). An op job has none."""
    planned: dict[str, set[str]] = {}
    events = instance.all_logs(
        run.run_id,
        of_type={
            DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            DagsterEventType.ASSET_MATERIALIZATION,
        },
    )
    done: set[tuple[str, str | None]] = set()
    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            done.add((materialization.asset_key.to_user_string(), materialization.partition))
            continue
        if event.step_key not in failed_steps:
            continue
        data = event.asset_materialization_planned_data
        keys = planned.setdefault(data.asset_key.to_user_string(), set())
        if data.partitions_subset is not None:
            keys.update(data.partitions_subset.get_partition_keys())
        elif data.partition:
            keys.add(data.partition)
    failed = {
        asset: sorted(k for k in keys if (asset, k) not in done) for asset, keys in planned.items()
    }
    # An asset whose partitions all published failed in a check or after its writes: still say it.
    return {asset: keys or sorted(planned[asset]) for asset, keys in failed.items()}


def job_title(run: DagsterRun, assets: list[str]) -> str:
    """The job as a user knows it: a run launched from the asset graph runs Dagster's hidden
    `__ASSET_JOB`, which no one has heard of: "asset run of daily_revenue"."""
    if not run.job_name.startswith(HIDDEN_JOB_PREFIX):
        return run.job_name
    selected = assets or sorted(k.to_user_string() for k in run.asset_selection or [])
    return f"asset run of {', '.join(selected) or 'assets'}"


def headline(
    run: DagsterRun,
    failed: dict[str, list[str]],
    backfill_id: str | None,
    steps: list[dict[str, Any]],
    run_error: str,
    where: str,
) -> str:
    """One line: what failed (assets and their partitions), in which backfill and job, why (as
    the step raised it, its first line whole) and where to look."""
    by_partitions: dict[tuple[str, ...], list[str]] = {}
    for asset, keys in sorted(failed.items()):
        by_partitions.setdefault(tuple(keys), []).append(asset)
    what = "; ".join(
        ", ".join(assets) + (f" {', '.join(keys)}" if keys else "")
        for keys, assets in by_partitions.items()
    )
    reasons = [str(s["error"]) for s in steps] or [run_error]
    why = "; ".join(dict.fromkeys(r.strip().splitlines()[0] for r in reasons if r.strip()))
    job = job_title(run, sorted(failed))
    context = f"backfill {backfill_id}, {job}" if backfill_id else job
    subject = f"{what} failed ({context})" if what else f"{job} failed"
    return f"{subject}: {why or 'no error recorded'} ({where})"


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


def send_alert(payload: dict[str, Any], webhook: AlertWebhookResource, log: Any) -> None:
    """POST one run failure alert (or only log it without a URL) and say so in `log`."""
    summary = f"run {payload['run_id']}: {payload['text']}" + (
        " (Dagster will retry the run)" if payload["will_retry"] else ""
    )
    delivery = webhook.send(payload, log=log)
    if delivery is None:
        log.warning(f"Alert not sent ({settings.ALERT_WEBHOOK_URL.name} is unset): {summary}")
    else:
        log.info(
            f"Alert sent to {delivery.url} (HTTP {delivery.status}, {delivery.attempts} "
            f"attempt(s)): {summary}"
        )


def _storage_id(cursor: str | None) -> int | None:
    """The cursor's storage id; None without one, or for one this sensor did not write (a reset
    cursor, or the JSON cursor of the run failure sensor it replaced)."""
    return int(cursor) if cursor and cursor.isdigit() else None


@sensor(
    name="run_failure_alert",
    description=(
        "Posts a JSON alert (job, run id, partition, error, link to the run) to the webhook in "
        "REGIONAL_ETL_ALERT_WEBHOOK_URL for every failed run on the instance (UI, schedules, "
        "sensors, `regional-etl backfill`), once per run, those that failed up to 24 h before "
        "its first tick included; without it, only logs the alert."
    ),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=settings.positive_int(settings.SENSOR_INTERVAL_SECONDS),
)
def run_failure_alert(
    context: SensorEvaluationContext, alert_webhook: AlertWebhookResource
) -> SensorResult:
    """Alert the run failures recorded after the cursor (a RUN_FAILURE event's storage id),
    oldest first, at most ALERTS_PER_TICK; without a cursor, those of the last ALERT_LOOKBACK.
    Raises `AlertDeliveryError` at the first alert the webhook does not take, so the tick fails
    with the reason and the cursor stays before that run: the next tick tries it again, and the
    runs alerted before it carry ALERTED_TAG and are not alerted twice."""
    instance = context.instance
    after = _storage_id(context.cursor)
    if after is None:
        # Where the window starts if nothing failed in it; read first, so a failure recorded
        # while this tick runs has a later storage id and is not skipped.
        newest = instance.fetch_run_status_changes(DagsterEventType.RUN_FAILURE, limit=1).records
        after = newest[0].storage_id if newest else 0
        since = dt.datetime.now(dt.UTC) - ALERT_LOOKBACK
        records_filter = RunStatusChangeRecordsFilter(
            event_type=DagsterEventType.RUN_FAILURE, after_timestamp=since.timestamp()
        )
    else:
        records_filter = RunStatusChangeRecordsFilter(
            event_type=DagsterEventType.RUN_FAILURE, after_storage_id=after
        )
    records = instance.fetch_run_status_changes(
        records_filter, limit=ALERTS_PER_TICK, ascending=True
    ).records
    alerted = 0
    for record in records:
        entry = record.event_log_entry
        run = instance.get_run_by_id(entry.run_id)
        if run is None:
            context.log.info(f"run {entry.run_id} failed and was deleted since: no alert")
        elif run.tags.get(ALERTED_TAG):
            context.log.info(f"run {run.run_id} was alerted at {run.tags[ALERTED_TAG]}: not again")
        else:
            event = entry.dagster_event
            run_error = (event.message if event is not None else None) or entry.message
            payload = failure_payload(instance, run, run_error, alert_webhook, context.sensor_name)
            try:
                send_alert(payload, alert_webhook, context.log)
            except AlertDeliveryError as exc:
                raise AlertDeliveryError(
                    f"alert for run {run.run_id} not delivered, tried again next tick "
                    f"({alerted} sent before it this tick): {exc}"
                ) from exc
            instance.add_run_tags(run.run_id, {ALERTED_TAG: payload["sent_at"]})
            alerted += 1
        after = record.storage_id
    more = " (more next tick)" if len(records) == ALERTS_PER_TICK else ""
    return SensorResult(
        skip_reason=f"alerted {alerted} failed run(s){more}" if records else "no failed run",
        cursor=str(after),
    )


ALERT_SENSORS = [run_failure_alert]
