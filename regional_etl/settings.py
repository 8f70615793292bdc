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
    """One environment variable: its name and its default (None: unset means off). What each
    means is said beside it below and in the README's table of settings."""

    name: str
    default: str | None

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


# The Dagster instance folder (dagster.yaml).
DAGSTER_HOME = Setting("DAGSTER_HOME", None)
# Resource map: local or cluster.
ENV = Setting("REGIONAL_ETL_ENV", "local")
# The user's cache folder.
XDG_CACHE_HOME = Setting("XDG_CACHE_HOME", "~/.cache")
# Landing-zone root.
LANDING = Setting("REGIONAL_ETL_LANDING", "./data/landing")
# Delta warehouse root.
WAREHOUSE = Setting("REGIONAL_ETL_WAREHOUSE", "./data/warehouse")
# First daily partition.
START_DATE = Setting("REGIONAL_ETL_START_DATE", "2024-01-01")
# Time zone of the daily partitions.
TIMEZONE = Setting("REGIONAL_ETL_TIMEZONE", "UTC")
# Where set-up puts the Delta jars.
JARS_DIR = Setting("REGIONAL_ETL_JARS_DIR", None)

# Spark
# Spark Connect endpoint (sc://host:port); unset: the embedded local Spark Connect server.
SPARK_REMOTE = Setting("REGIONAL_ETL_SPARK_REMOTE", None)
# The local server stops after this idle time.
SPARK_IDLE_MINUTES = Setting("REGIONAL_ETL_SPARK_IDLE_MINUTES", "30")
# Heap of the local Spark Connect server.
SPARK_DRIVER_MEMORY = Setting("REGIONAL_ETL_SPARK_DRIVER_MEMORY", "2g")
# Extra Spark settings of the local server, k1=v1,k2=v2.
SPARK_CONF = Setting("REGIONAL_ETL_SPARK_CONF", None)
# Folder of the local server's state file and log (default: the user's cache folder).
SPARK_STATE_DIR = Setting("REGIONAL_ETL_SPARK_STATE_DIR", None)

# FX service, its circuit breaker, failure alerts and step retries
# FX service base URL; unset: runs read the bundled ECB history in-process.
FX_URL = Setting("REGIONAL_ETL_FX_URL", None)
# FX circuit-breaker state, sqlite:///<path> or redis://host:port/db; unset: SQLite under
# DAGSTER_HOME.
BREAKER_STORAGE = Setting("REGIONAL_ETL_BREAKER_STORAGE", None)
# Where run failure alerts are POSTed; unset: logged.
ALERT_WEBHOOK_URL = Setting("REGIONAL_ETL_ALERT_WEBHOOK_URL", None)
# Dagster UI base URL, for full run links in alerts.
DAGSTER_UI_URL = Setting("REGIONAL_ETL_DAGSTER_UI_URL", None)
# A drop is due this many hours after the end of its day (in REGIONAL_ETL_TIMEZONE).
DELIVERY_DEADLINE_HOURS = Setting("REGIONAL_ETL_DELIVERY_DEADLINE_HOURS", "6")
# Per-region exceptions to the delivery deadline, region=hours,... (ap-south=9).
DELIVERY_DEADLINE_HOURS_BY_REGION = Setting("REGIONAL_ETL_DELIVERY_DEADLINE_HOURS_BY_REGION", None)
# The deadline sensor looks at dates whose deadline passed within this many days.
DELIVERY_LOOKBACK_DAYS = Setting("REGIONAL_ETL_DELIVERY_LOOKBACK_DAYS", "7")
# Read when the code location loads (a sensor's interval is part of its definition): a change
# takes effect on the next reload or deployment.
# The landing, automation and failure-alert sensors evaluate at most this often (seconds).
SENSOR_INTERVAL_SECONDS = Setting("REGIONAL_ETL_SENSOR_INTERVAL_SECONDS", "30")
# Step retries of fx_rates.
FX_STEP_RETRIES = Setting("REGIONAL_ETL_FX_STEP_RETRIES", "3")
# Base delay of fx_rates step retries.
FX_STEP_RETRY_DELAY = Setting("REGIONAL_ETL_FX_STEP_RETRY_DELAY_SECONDS", "5")
# Step retries of raw_orders.
LANDING_STEP_RETRIES = Setting("REGIONAL_ETL_LANDING_STEP_RETRIES", "2")
# Base delay of raw_orders step retries.
LANDING_STEP_RETRY_DELAY = Setting("REGIONAL_ETL_LANDING_STEP_RETRY_DELAY_SECONDS", "2")
# Step retries of orders waiting for FX rates.
UPSTREAM_STEP_RETRIES = Setting("REGIONAL_ETL_UPSTREAM_STEP_RETRIES", "3")
# Base delay of orders step retries.
UPSTREAM_STEP_RETRY_DELAY = Setting("REGIONAL_ETL_UPSTREAM_STEP_RETRY_DELAY_SECONDS", "20")
# Volume gate: fewest orders.
GATE_MIN_ROWS = Setting("REGIONAL_ETL_GATE_MIN_ROWS", "1000")
# Volume gate: most orders.
GATE_MAX_ROWS = Setting("REGIONAL_ETL_GATE_MAX_ROWS", "10000000")
# Quarantine-ratio warning threshold.
GATE_MAX_QUARANTINE_RATIO = Setting("REGIONAL_ETL_GATE_MAX_QUARANTINE_RATIO", "0.05")
# Quarantine-ratio blocking threshold.
GATE_BLOCK_QUARANTINE_RATIO = Setting("REGIONAL_ETL_GATE_BLOCK_QUARANTINE_RATIO", "0.5")

# Blue-green releases
# Promotion refused above this many orders added, removed or changed over the range.
RELEASE_MAX_CHANGED_ORDERS = Setting("REGIONAL_ETL_RELEASE_MAX_CHANGED_ORDERS", "1000")
# Promotion refused when a date's revenue moves by more than this (USD, summed over regions).
RELEASE_MAX_REVENUE_DIFF_USD = Setting("REGIONAL_ETL_RELEASE_MAX_REVENUE_DIFF_USD", "1000")
