"""The Spark resource: a Spark Connect session to a warm Spark; a run process holds no JVM."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource, Failure, InitResourceContext, get_dagster_logger
from pydantic import Field, PrivateAttr

from regional_etl.spark import server

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Per-session settings every client sends, so a remote cluster gets them as well.
SESSION_DEFAULTS: dict[str, str] = {
    # Timestamps are stored and compared in UTC whatever the machine's zone is.
    "spark.sql.session.timeZone": "UTC",
    # Partitions of a few MB: a handful of shuffle tasks, not 200.
    "spark.sql.shuffle.partitions": "4",
    # INT96 (Spark's legacy default) overflows the nanosecond timestamps of delta-rs/pyarrow for
    # dates past 2262; microseconds are the Parquet standard every engine reads.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # Keep tables readable by delta-rs and DuckDB: no table features we do not need.
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
}

# How a step's expressions are evaluated, by the size of its input. Spark compiles the
# expressions of every query to bytecode (Janino), warm server or not: the compile is a fixed
# cost per query, a large share of the server's CPU when a query sees only a few thousand rows.
# Interpreted evaluation skips it and is slower per row, so it wins on small inputs and loses
# on large ones; the crossing point, measured, is in benchmarks/README.md ("Small steps
# evaluated interpreted"). `factoryMode` is an internal Spark setting; NO_CODEGEN is its
# interpreted mode.
# Small steps also plan their queries once instead of adaptively: adaptive execution re-plans
# at every shuffle from the sizes it measured, which pays off on large, skewed or badly
# partitioned data and is pure overhead on a few MB in four shuffle partitions (Delta's own
# log-replay queries included).
INTERPRETED: dict[str, str] = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.sql.adaptive.enabled": "false",
}
COMPILED: dict[str, str] = {
    "spark.sql.codegen.wholeStage": "true",
    "spark.sql.codegen.factoryMode": "FALLBACK",
    "spark.sql.adaptive.enabled": "true",
}


class SparkResource(ConfigurableResource):
    """Spark with Delta Lake through Spark Connect: each run is a thin client of a warm Spark.

    With no `remote`, the project's local Spark Connect server is used: one per user, bound to
    127.0.0.1, started by the first client that needs it and stopped after an idle period
    (`regional-etl spark-server status|start|stop`). With `remote` (REGIONAL_ETL_SPARK_REMOTE),
    any Spark Connect endpoint that has the Delta extensions loaded: a standalone or Kubernetes
    cluster, or a managed service. The session is opened on first use, so steps that do not
    touch Spark, and loading the code location, connect to nothing.

    Not dagster-pyspark's (Lazy)PySparkResource: its `spark_config` is fixed when the resource
    is built, but the local server's URL is known only once `ensure_running` found or started it
    and changes when it restarts; its `getOrCreate` hands back the process's existing session (to
    the dead server, after a restart); it has no per-step sizing, retry policy or session stop.
    """

    remote: str | None = Field(
        default=None,
        description="Spark Connect URL, sc://host:port[/;token=...]. Unset: the local server.",
    )
    session_config: dict[str, str] = Field(
        default_factory=dict,
        description="Spark SQL settings of this client's session; they win over the defaults "
        "(UTC, 4 shuffle partitions, TIMESTAMP_MICROS, no deletion vectors).",
    )
    interpreted_max_rows: int = Field(
        default=100_000,
        description="Steps over at most this many input rows evaluate Spark expressions "
        "interpreted instead of compiling them, and plan without adaptive execution: both cost "
        "more than they save on small inputs (measured in benchmarks/README.md). 0 always "
        "compiles and plans adaptively.",
    )
    connect_retries: int = Field(
        default=5,
        description="Client retries of an unreachable server (backoff from 50 ms, x4, at most "
        "10 s) before the step fails and its retry policy takes over.",
    )

    _session: Any = PrivateAttr(default=None)
    _server_id: str | None = PrivateAttr(default=None)

    @property
    def spark_session(self) -> SparkSession:
        """This resource's session; a new one if the local server was restarted meanwhile."""
        url, server_id = self._endpoint()
        if self._session is None or server_id != self._server_id:
            self._session = _connect(url, {**SESSION_DEFAULTS, **self.session_config}, self)
            self._server_id = server_id
        return self._session

    def session_for(self, rows: int) -> SparkSession:
        """This resource's session, set up for a step whose input is about `rows` rows:
        interpreted expressions and static plans up to `interpreted_max_rows`, compiled and
        adaptive above (see INTERPRETED).
        What `session_config` sets explicitly wins."""
        from pyspark.errors import PySparkException

        small = self.interpreted_max_rows > 0 and rows <= self.interpreted_max_rows
        evaluation = INTERPRETED if small else COMPILED
        session = self.spark_session
        try:
            for key, value in evaluation.items():
                if key not in self.session_config:
                    session.conf.set(key, value)
        except PySparkException as exc:
            if _is_unavailable(exc):
                raise
            # A managed endpoint may refuse Spark's internal settings: only speed is at stake.
            get_dagster_logger().warning(
                f"{self.remote or 'the Spark server'} refused the evaluation settings, the step "
                f"runs with its defaults: {str(exc).splitlines()[0]}"
            )
        return session

    def url(self) -> str:
        return self._endpoint()[0]

    def _endpoint(self) -> tuple[str, str | None]:
        if self.remote:
            return self.remote, None
        state = server.ensure_running()
        return state.url, state.server_id

    @contextmanager
    def connection_errors(self) -> Iterator[None]:
        """Turn a lost server into a Failure that says so; the step's retry reconnects (the
        local server is started again by the next `spark_session`)."""
        try:
            yield
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            where = self.remote or "the local Spark Connect server"
            raise Failure(
                description=f"lost the connection to {where} ({type(exc).__name__}): the step's "
                "retry reconnects, and a local server is started again if it died. "
                f"Server log: {server.state_dir() / server.LOG_FILE}",
                allow_retries=True,
            ) from exc

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        # Releases the server-side session (cached data, temp views) now, not at its timeout.
        if self._session is not None:
            try:
                self._session.stop()
            except Exception as exc:  # the server may already be gone; nothing to release
                if context.log:
                    context.log.debug(f"Spark session stop: {exc}")
            self._session = None


def _connect(url: str, conf: dict[str, str], resource: SparkResource) -> SparkSession:
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.client.retries import DefaultPolicy

    # pyspark's own builder, not the Connect one: it also switches `pyspark.sql.functions` and
    # friends of this process to Connect mode.
    builder = SparkSession.builder.remote(url)
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.create()
    # The default tolerates ten minutes of an unreachable server, which turns a dead local
    # server into a hung run; Dagster's step retry is the place for longer waits.
    session.client.set_retry_policies(  # type: ignore[attr-defined]
        [DefaultPolicy(max_retries=resource.connect_retries, max_backoff=10_000)]
    )
    return session


def _is_unavailable(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(s in text for s in ("UNAVAILABLE", "Connection refused", "Socket closed"))
