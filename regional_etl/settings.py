"""Every environment variable the product reads, declared once and read when asked.

Nothing here is read at import time: the CLI may set a variable (the demo points
`REGIONAL_ETL_FX_URL` at the FX server it started) before any of these are consulted, whatever
the import order. Resources take their values through `configured`, which hands Dagster an
`EnvVar` when the variable is set, so the UI's resource page names the variable behind a value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from dagster import EnvVar


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, its default (None: unset means off) and meaning."""

    name: str
    default: str | None
    help: str

    def get(self) -> str | None:
        value = os.environ.get(self.name, "").strip()
        return value or self.default

    def is_set(self) -> bool:
        return bool(os.environ.get(self.name, "").strip())

    def set(self, value: str) -> None:
        """For this process and the ones it starts (the demo points runs at its FX server)."""
        os.environ[self.name] = value


def environment(**overrides: str) -> dict[str, str]:
    """This process's environment for a child process, with overrides."""
    return {**os.environ, **overrides}


def configured(setting: Setting, kind: type = str) -> Any:
    """The value for a resource field: `EnvVar` when the variable is set (the UI shows its
    name), the default otherwise. `kind` is str, int or float."""
    if not setting.is_set():
        return None if setting.default is None else kind(setting.default)
    if kind is str:
        return EnvVar(setting.name)
    if kind is int:
        return EnvVar.int(setting.name)
    # EnvVar has no float flavour: read and validate the value here.
    raw = setting.get()
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{setting.name}={raw!r}: expected a {kind.__name__}") from None


def positive_int(setting: Setting) -> int:
    """The setting's value as a whole number of at least 1; a clear error naming it otherwise."""
    raw = setting.get()
    try:
        value = int(raw or "")
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{setting.name}={raw!r}: expected a whole number of at least 1")
    return value


DAGSTER_HOME = Setting("DAGSTER_HOME", None, "the Dagster instance folder (dagster.yaml)")
ENV = Setting("REGIONAL_ETL_ENV", "local", "resource map: local or cluster")
XDG_CACHE_HOME = Setting("XDG_CACHE_HOME", "~/.cache", "the user's cache folder")
LANDING = Setting("REGIONAL_ETL_LANDING", "./data/landing", "landing-zone root")
WAREHOUSE = Setting("REGIONAL_ETL_WAREHOUSE", "./data/warehouse", "Delta warehouse root")
START_DATE = Setting("REGIONAL_ETL_START_DATE", "2024-01-01", "first daily partition")
TIMEZONE = Setting("REGIONAL_ETL_TIMEZONE", "UTC", "time zone of the daily partitions")
JARS_DIR = Setting("REGIONAL_ETL_JARS_DIR", None, "where set-up puts the Delta jars")

# Spark
SPARK_REMOTE = Setting(
    "REGIONAL_ETL_SPARK_REMOTE",
    None,
    "Spark Connect endpoint (sc://host:port); unset: the embedded local Spark Connect server",
)
SPARK_IDLE_MINUTES = Setting(
    "REGIONAL_ETL_SPARK_IDLE_MINUTES", "30", "the local server stops after this idle time"
)
SPARK_DRIVER_MEMORY = Setting(
    "REGIONAL_ETL_SPARK_DRIVER_MEMORY", "2g", "heap of the local Spark Connect server"
)
SPARK_CONF = Setting(
    "REGIONAL_ETL_SPARK_CONF", None, "extra Spark settings of the local server, k1=v1,k2=v2"
)
SPARK_STATE_DIR = Setting(
    "REGIONAL_ETL_SPARK_STATE_DIR",
    None,
    "folder of the local server's state file and log (default: the user's cache folder)",
)

# FX service, its circuit breaker, failure alerts and step retries
FX_URL = Setting(
    "REGIONAL_ETL_FX_URL",
    None,
    "FX service base URL; unset: runs read the bundled ECB history in-process",
)
BREAKER_STORAGE = Setting(
    "REGIONAL_ETL_BREAKER_STORAGE",
    None,
    "FX circuit-breaker state, sqlite:///<path> or redis://host:port/db; unset: SQLite under "
    "DAGSTER_HOME",
)
ALERT_WEBHOOK_URL = Setting(
    "REGIONAL_ETL_ALERT_WEBHOOK_URL", None, "where run failure alerts are POSTed; unset: logged"
)
DAGSTER_UI_URL = Setting(
    "REGIONAL_ETL_DAGSTER_UI_URL", None, "Dagster UI base URL, for full run links in alerts"
)
DELIVERY_DEADLINE_HOURS = Setting(
    "REGIONAL_ETL_DELIVERY_DEADLINE_HOURS",
    "6",
    "a drop is due this many hours after the end of its day (in REGIONAL_ETL_TIMEZONE)",
)
DELIVERY_DEADLINE_HOURS_BY_REGION = Setting(
    "REGIONAL_ETL_DELIVERY_DEADLINE_HOURS_BY_REGION",
    None,
    "per-region exceptions to the delivery deadline, region=hours,... (ap-south=9)",
)
DELIVERY_LOOKBACK_DAYS = Setting(
    "REGIONAL_ETL_DELIVERY_LOOKBACK_DAYS",
    "7",
    "the deadline sensor looks at dates whose deadline passed within this many days",
)
# Read when the code location loads (a sensor's interval is part of its definition), like
# REGIONAL_ETL_RELEASE: a change takes effect on the next reload or deployment.
SENSOR_INTERVAL_SECONDS = Setting(
    "REGIONAL_ETL_SENSOR_INTERVAL_SECONDS",
    "30",
    "the landing, automation and failure-alert sensors evaluate at most this often (seconds)",
)
FX_STEP_RETRIES = Setting("REGIONAL_ETL_FX_STEP_RETRIES", "3", "step retries of fx_rates")
FX_STEP_RETRY_DELAY = Setting(
    "REGIONAL_ETL_FX_STEP_RETRY_DELAY_SECONDS", "5", "base delay of fx_rates step retries"
)
LANDING_STEP_RETRIES = Setting(
    "REGIONAL_ETL_LANDING_STEP_RETRIES", "2", "step retries of raw_orders"
)
LANDING_STEP_RETRY_DELAY = Setting(
    "REGIONAL_ETL_LANDING_STEP_RETRY_DELAY_SECONDS", "2", "base delay of raw_orders step retries"
)
UPSTREAM_STEP_RETRIES = Setting(
    "REGIONAL_ETL_UPSTREAM_STEP_RETRIES", "3", "step retries of orders waiting for FX rates"
)
UPSTREAM_STEP_RETRY_DELAY = Setting(
    "REGIONAL_ETL_UPSTREAM_STEP_RETRY_DELAY_SECONDS", "20", "base delay of orders step retries"
)
GATE_MIN_ROWS = Setting("REGIONAL_ETL_GATE_MIN_ROWS", "1000", "volume gate: fewest orders")
GATE_MAX_ROWS = Setting("REGIONAL_ETL_GATE_MAX_ROWS", "10000000", "volume gate: most orders")
GATE_MAX_QUARANTINE_RATIO = Setting(
    "REGIONAL_ETL_GATE_MAX_QUARANTINE_RATIO", "0.05", "quarantine-ratio warning threshold"
)
GATE_BLOCK_QUARANTINE_RATIO = Setting(
    "REGIONAL_ETL_GATE_BLOCK_QUARANTINE_RATIO", "0.5", "quarantine-ratio blocking threshold"
)

# Blue-green releases
RELEASE = Setting(
    "REGIONAL_ETL_RELEASE",
    "blue",
    "warehouse namespace this code location writes: blue (the warehouse root) or a release "
    "name such as green (<warehouse>/releases/<name>, asset keys prefixed with it)",
)
RELEASE_MAX_CHANGED_ORDERS = Setting(
    "REGIONAL_ETL_RELEASE_MAX_CHANGED_ORDERS",
    "1000",
    "promotion refused above this many orders added, removed or changed over the range",
)
RELEASE_MAX_REVENUE_DIFF_USD = Setting(
    "REGIONAL_ETL_RELEASE_MAX_REVENUE_DIFF_USD",
    "1000",
    "promotion refused when a date's revenue moves by more than this (USD, summed over regions)",
)
