"""The code location: the one Definitions object that `workspace.yaml` loads.

Importing this module must stay cheap and must not start a JVM: Spark starts lazily inside runs.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor, load_assets_from_modules

from regional_etl.assets import bronze, gold, reference, silver
from regional_etl.jobs import ALL_JOBS
from regional_etl.resources.environments import resources_for

# Steps of one run share a process, hence one SparkSession: a multiprocess executor would start
# a JVM per step, which costs more than the parallelism it buys on small partitions.
defs = Definitions(
    assets=load_assets_from_modules([reference, bronze, silver, gold]),
    jobs=ALL_JOBS,
    resources=resources_for(),
    executor=in_process_executor,
)
