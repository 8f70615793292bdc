"""The code location: the one Definitions object that `workspace.yaml` loads.

Importing this module must stay cheap and must not start a JVM or the Spark server: a run
connects to Spark on first use.
"""

from __future__ import annotations

from typing import Any

from dagster import (
    Definitions,
    in_process_executor,
    load_assets_from_modules,
    with_source_code_references,
)

from regional_etl.alerts import ALERT_SENSORS, alert_resources
from regional_etl.assets import bronze, gold, reference, silver
from regional_etl.automation.schedules import SCHEDULES
from regional_etl.automation.sensors import SENSORS
from regional_etl.jobs import ALL_JOBS
from regional_etl.resources.environments import resources_for

ASSET_MODULES = [reference, bronze, silver, gold]


def build_definitions(resources: dict[str, Any] | None = None) -> Definitions:
    """The full code location; tests pass their own resources (paths in tmp_path, a test FX)."""
    return Definitions(
        # The UI links each asset to the file and line that defines it.
        assets=with_source_code_references(load_assets_from_modules(ASSET_MODULES)),
        jobs=ALL_JOBS,
        schedules=SCHEDULES,
        sensors=[*SENSORS, *ALERT_SENSORS],
        # The alert sensor's webhook resource comes first so a test's own map still loads.
        resources={
            **alert_resources(),
            **(resources if resources is not None else resources_for()),
        },
        # A run's steps form a chain (bronze -> silver, or one asset), so a process per step
        # would only add Python start-ups: the parallelism is across runs and in Spark.
        executor=in_process_executor,
    )


defs = build_definitions()
