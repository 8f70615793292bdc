"""The classic Spark path, kept for comparison only: a JVM inside every process that uses Spark.

The product runs every Dagster run as a Spark Connect client of one warm server
(`regional_etl.spark.resource.SparkResource`). This module keeps what a run did before that,
so the benchmarks can measure both side by side: `start_session` builds the same local Spark
with Delta in this process (the same static settings as the Connect server, the same session
settings as every Connect client), and `ClassicSparkResource` hands it to the assets.

The bare PySpark benchmark, the gate benchmark and the profile use `start_session` directly (what
a user writes without the product); `benchmarks.classic_location` runs the code location on it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from dagster import InitResourceContext
from pydantic import Field

from regional_etl.spark.resource import SESSION_DEFAULTS, SparkResource

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def classic_conf(master: str, driver_memory: str, extra: dict[str, Any]) -> dict[str, str]:
    """The Connect server's static settings, the clients' session settings, then `extra`."""
    from regional_etl.spark.jars import resolved_jars
    from regional_etl.spark.server import SERVER_CONF

    # The server's own settings minus its gRPC endpoint: the same Spark, in this process.
    conf = {k: v for k, v in SERVER_CONF.items() if not k.startswith("spark.connect.")}
    conf.update(
        {
            "spark.master": master,
            "spark.app.name": "regional-etl-classic",
            "spark.driver.memory": driver_memory,
            "spark.jars": ",".join(resolved_jars()),
            **SESSION_DEFAULTS,
        }
    )
    conf.update({k: str(v) for k, v in extra.items()})
    return conf


def start_session(
    master: str = "local[*]", driver_memory: str = "2g", extra: dict[str, Any] | None = None
) -> SparkSession:
    """Get or create this process's classic SparkSession (its JVM is a child of this process),
    or in a smoke run a Connect session of the warm local server.

    glibc gives every JVM thread that allocates natively its own 64 MiB malloc arena; the JVM
    inherits this process's environment, so the cap is set before it starts (a value already
    set wins), as the Connect server's supervisor does.
    """
    from pyspark.sql import SparkSession

    from benchmarks.common import CLASSIC_ON_SERVER

    if os.environ.get(CLASSIC_ON_SERVER):
        # A smoke run (`Sizes.smoke`): the same code on the warm server, no JVM of its own, with
        # the evaluation the product picks for inputs this small (interpreted: compiling every
        # query of a 100-line partition costs the server far more than running it).
        resource = SparkResource(session_config={k: str(v) for k, v in (extra or {}).items()})
        return resource.session_for(rows=0)
    if master.startswith("local"):
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    builder = SparkSession.builder
    for key, value in classic_conf(master, driver_memory, extra or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


class ClassicSparkResource(SparkResource):
    """Benchmark only: a classic local SparkSession started inside the run process.

    Each run process pays a JVM start and runs its Spark code cold: the per-run cost the Spark
    Connect resource removes. The session lives as long as the process (one per run process, as
    before Spark Connect), so teardown leaves it running for the next run of the same process.
    """

    master: str = Field(default="local[*]", description="Spark master of the in-process JVM.")
    driver_memory: str = Field(default="2g", description="Driver heap of the in-process JVM.")
    spark_config: dict[str, str] = Field(
        default_factory=dict, description="Extra Spark settings; they win over the defaults."
    )

    @property
    def spark_session(self) -> SparkSession:
        """The process's classic session, started on first use."""
        return start_session(
            self.master, self.driver_memory, {**self.session_config, **self.spark_config}
        )

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        return None
