"""The Spark access path: thin Spark Connect clients of the one local server, on loopback."""

from __future__ import annotations

import os

import psutil
import pytest

from regional_etl.spark.resource import SparkResource
from regional_etl_tests.procs import java_children, listening_addresses


def test_sessions_are_spark_connect_clients_and_the_test_process_starts_no_jvm(spark) -> None:
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    assert isinstance(spark, ConnectSession)
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert spark.conf.get("spark.sql.parquet.outputTimestampType") == "TIMESTAMP_MICROS"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert java_children(os.getpid()) == []


def test_local_server_is_loopback_only_with_capped_arenas(spark_server_state) -> None:
    state = spark_server_state
    assert state.url.startswith("sc://127.0.0.1:")
    jvm = psutil.Process(state.jvm_pid)
    cmdline = jvm.cmdline()
    for setting in (
        "spark.driver.host=127.0.0.1",
        "spark.driver.bindAddress=127.0.0.1",
        "spark.connect.grpc.binding.address=127.0.0.1",
        "spark.ui.enabled=false",
    ):
        assert setting in cmdline
    listening = listening_addresses([state.jvm_pid])
    assert listening, "the server JVM listens on no TCP port"
    assert all(addr == "127.0.0.1" for addr, _ in listening), listening
    # "2" unless the shell that started the server set its own value, which wins.
    assert "MALLOC_ARENA_MAX" in jvm.environ()


def test_every_resource_reaches_the_same_server(spark_server_state) -> None:
    one, two = SparkResource(), SparkResource()
    assert one.url() == two.url() == spark_server_state.url
    assert one.spark_session.range(3).count() == 3
    assert spark_server_state.connected_clients() >= 1


def test_small_steps_evaluate_interpreted_and_large_ones_compiled(spark_server_state) -> None:
    resource = SparkResource(interpreted_max_rows=1_000)
    small = resource.session_for(1_000)
    assert small.conf.get("spark.sql.codegen.factoryMode") == "NO_CODEGEN"
    assert small.conf.get("spark.sql.codegen.wholeStage") == "false"
    assert small.conf.get("spark.sql.adaptive.enabled") == "false"
    query = "SELECT sum(id * 3) AS s, count(DISTINCT id % 7) AS d FROM range(100) WHERE id > 9"
    interpreted = small.sql(query).collect()

    large = resource.session_for(1_001)
    assert large is small
    assert large.conf.get("spark.sql.codegen.factoryMode") == "FALLBACK"
    assert large.conf.get("spark.sql.codegen.wholeStage") == "true"
    assert large.conf.get("spark.sql.adaptive.enabled") == "true"
    assert large.sql(query).collect() == interpreted == [(14715, 7)]
    large.stop()

    always_compiled = SparkResource(interpreted_max_rows=0).session_for(0)
    assert always_compiled.conf.get("spark.sql.codegen.factoryMode") == "FALLBACK"
    always_compiled.stop()

    # What the user set explicitly wins over the choice by size.
    pinned = SparkResource(session_config={"spark.sql.codegen.wholeStage": "true"})
    session = pinned.session_for(10)
    assert session.conf.get("spark.sql.codegen.wholeStage") == "true"
    assert session.conf.get("spark.sql.codegen.factoryMode") == "NO_CODEGEN"
    session.stop()


def test_an_endpoint_refusing_the_evaluation_settings_runs_the_step_anyway(
    spark_server_state, monkeypatch, caplog
) -> None:
    from regional_etl.spark import resource as spark_resource

    # Open-source Spark Connect has no way to forbid a session setting (no deny list), so no
    # real server here refuses the evaluation settings themselves. A static setting is refused
    # by the real server in the same way, so the list asked for gets one in front.
    refused = {"spark.sql.warehouse.dir": "/elsewhere", **spark_resource.INTERPRETED}
    monkeypatch.setattr(spark_resource, "INTERPRETED", refused)
    session = SparkResource().session_for(10)
    assert session.range(4).count() == 4
    assert "refused the evaluation settings" in caplog.text
    session.stop()


def test_setup_copies_the_jars_a_checkout_on_this_machine_resolved_before(
    tmp_path, monkeypatch
) -> None:
    """A clean clone in CI takes the user cache's resolution instead of starting a JVM to fetch
    the same jars again; a resolution for another coordinate there is never taken."""
    import json

    from regional_etl.spark import jars

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    cache = jars.user_cache_dir()
    cache.mkdir(parents=True)
    names = ["io.delta_delta-spark_2.13-x.jar", "io.delta_delta-storage-x.jar"]
    for name in names:
        (cache / name).write_bytes(name.encode())
    (cache / jars.MANIFEST).write_text(
        json.dumps({"coordinate": jars.delta_coordinate(), "jars": names})
    )

    checkout = tmp_path / "checkout" / ".cache" / "jars"
    resolved = jars.resolve_jars(checkout)
    assert resolved == [str(checkout / n) for n in names]
    assert [(checkout / n).read_bytes() for n in names] == [n.encode() for n in names]
    assert jars.resolved_jars(checkout) == resolved

    (cache / jars.MANIFEST).write_text(json.dumps({"coordinate": "io.delta:old:1", "jars": names}))
    monkeypatch.setattr(jars, "_resolve_with_ivy", lambda d: pytest.fail(f"Ivy for {d}"))
    with pytest.raises(pytest.fail.Exception, match="Ivy for"):
        jars.resolve_jars(tmp_path / "other-checkout")
