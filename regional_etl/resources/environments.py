"""One resource map per environment, chosen by REGIONAL_ETL_ENV (local by default).

Endpoints and paths come from the environment (`EnvVar` where there is no sensible default), so
the same code location runs embedded on a laptop and against a cluster and the real FX service.
"""

from __future__ import annotations

from typing import Any

from dagster import EnvVar

from regional_etl import settings
from regional_etl.checks import QualityGateResource
from regional_etl.resources.fx import FXRatesResource
from regional_etl.resources.warehouse import LIVE, WarehouseResource
from regional_etl.spark.resource import SparkResource


def _fx() -> FXRatesResource:
    # Unset URL: the bundled ECB history, read in-process (no HTTP, no breaker), so a run needs
    # nothing else running; its numbers are those the HTTP client gets from `fx-server`.
    return FXRatesResource(
        base_url=settings.configured(settings.FX_URL),
        breaker_storage_url=settings.configured(settings.BREAKER_STORAGE),
    )


def _warehouse(namespace: str) -> WarehouseResource:
    return WarehouseResource(
        landing_root=settings.configured(settings.LANDING),
        warehouse_root=settings.configured(settings.WAREHOUSE),
        namespace=namespace,
    )


def resources_for(namespace: str = LIVE, env: str | None = None) -> dict[str, Any]:
    """The resources of `env` (default REGIONAL_ETL_ENV) for the location writing `namespace`:
    LIVE (the live location) or NEXT (the release location)."""
    env = env or settings.ENV.get()
    if env == "local":
        # Unset: the local Spark Connect server; set: that endpoint.
        spark = SparkResource(remote=settings.configured(settings.SPARK_REMOTE))
    elif env == "cluster":
        spark = SparkResource(remote=EnvVar(settings.SPARK_REMOTE.name))
    else:
        raise ValueError(f"REGIONAL_ETL_ENV={env!r}: expected 'local' or 'cluster'")
    return {
        "spark": spark,
        "fx": _fx(),
        "warehouse": _warehouse(namespace),
        "quality_gates": quality_gates(),
    }


def quality_gates() -> QualityGateResource:
    return QualityGateResource(
        min_rows=settings.configured(settings.GATE_MIN_ROWS, int),
        max_rows=settings.configured(settings.GATE_MAX_ROWS, int),
        max_quarantine_ratio=settings.configured(settings.GATE_MAX_QUARANTINE_RATIO, float),
        block_quarantine_ratio=settings.configured(settings.GATE_BLOCK_QUARANTINE_RATIO, float),
    )
