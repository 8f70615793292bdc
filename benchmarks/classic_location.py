"""The product's code location on the classic Spark path: every run starts its own JVM.

Benchmark only (`dagster job execute -m benchmarks.classic_location ...`): the same assets, jobs
and resources as `regional_etl.definitions`, with the Spark Connect resource replaced by
`ClassicSparkResource`. Importing it starts no JVM either.
"""

from __future__ import annotations

from benchmarks.classic_spark import ClassicSparkResource
from regional_etl.definitions import build_definitions
from regional_etl.resources.environments import resources_for

defs = build_definitions({**resources_for(), "spark": ClassicSparkResource()})
