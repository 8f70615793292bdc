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
from regional_etl.assets import bronze, gold, reference, release, silver
from regional_etl.automation.deadlines import DEADLINE_CHECKS, DEADLINE_SENSORS, deadline_resources
from regional_etl.automation.schedules import SCHEDULES
from regional_etl.automation.sensors import SENSORS
from regional_etl.jobs import ALL_JOBS, asset_jobs
from regional_etl.release.promotion import RELEASE_PREFIX
from regional_etl.resources.environments import resources_for
from regional_etl.resources.warehouse import LIVE, NEXT

PIPELINE_MODULES = [reference, bronze, silver, gold]


def build_definitions(
    resources: dict[str, Any] | None = None, release_location: bool = False
) -> Definitions:
    """The full code location; tests pass their own resources (paths in tmp_path, a test FX).

    The live location (workspace.yaml) writes the namespace readers see, blue or green as the
    release pointer says when each run starts: its asset keys, schedules, sensors and history
    stay the same across promotions and rollbacks, and no setting changes with them.

    The release location (`release_location`, workspace-release.yaml beside the live one)
    writes the other namespace. Its asset keys are prefixed `release/` (release/orders), so the
    two load side by side and their gates stay apart on the instance; it has no schedules or
    sensors (a release is built by a backfill of its range from the UI), and it holds the
    release tooling: start_release, the diff (which needs a date range as run config), the
    catch-up, promote and rollback. Everything the live location shows can be launched with
    no config, so "Materialize all" over a date range of it is one launch.
    """
    live = not release_location
    prefix = None if live else RELEASE_PREFIX
    return Definitions(
        # The UI links each asset to the file and line that defines it.
        assets=with_source_code_references(
            load_assets_from_modules(
                PIPELINE_MODULES if live else [*PIPELINE_MODULES, release], key_prefix=prefix
            )
        ),
        # The delivery deadline check is on the live raw_orders, and its sensor reports it.
        asset_checks=DEADLINE_CHECKS if live else [],
        # The schedules and sensors target the module's jobs: the live location uses those.
        jobs=ALL_JOBS if live else [*asset_jobs(prefix), *release.RELEASE_JOBS],
        schedules=SCHEDULES if live else [],
        sensors=[*SENSORS, *ALERT_SENSORS, *DEADLINE_SENSORS] if live else [],
        # The alert sensor's webhook and the delivery deadlines come first so a test's own map
        # still loads. The release thresholds are no resource: a resource's config can be
        # edited in the launchpad, and a promotion reads the deployment's (release/report.py).
        resources={
            **alert_resources(),
            **(deadline_resources() if live else {}),
            **(resources if resources is not None else resources_for(LIVE if live else NEXT)),
        },
        # A run's steps form a chain (bronze -> silver, or one asset), so a process per step
        # would only add Python start-ups: the parallelism is across runs and in Spark.
        executor=in_process_executor,
    )


defs = build_definitions()
