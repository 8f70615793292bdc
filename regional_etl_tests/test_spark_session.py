"""The Spark access path: thin Spark Connect clients of the one local server, on loopback."""

from __future__ import annotations

import os
from pathlib import Path

from regional_etl.spark.resource import SparkResource
from regional_etl_tests.procs import java_children


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
    cmdline = Path(f"/proc/{state.jvm_pid}/cmdline").read_bytes().split(b"\0")
    for setting in (
        b"spark.driver.host=127.0.0.1",
        b"spark.driver.bindAddress=127.0.0.1",
        b"spark.connect.grpc.binding.address=127.0.0.1",
        b"spark.ui.enabled=false",
    ):
        assert setting in cmdline
    listening = _listening_addresses(state.jvm_pid)
    assert listening, "the server JVM listens on no TCP port"
    assert all(addr == "127.0.0.1" for addr, _ in listening), listening
    environ = Path(f"/proc/{state.jvm_pid}/environ").read_bytes().split(b"\0")
    # "2" unless the shell that started the server set its own value, which wins.
    assert any(e.startswith(b"MALLOC_ARENA_MAX=") for e in environ)


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


def _listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets in LISTEN state that `pid` owns."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            host, port = fields[1].rsplit(":", 1)
            found.append((_address(host, family), int(port, 16)))
    return found


def _address(hex_host: str, family: int) -> str:
    raw = bytes.fromhex(hex_host)
    if family == 4:
        return ".".join(str(b) for b in reversed(raw))
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    joined = b"".join(words)
    if joined[:12] == b"\0" * 10 + b"\xff\xff":
        return ".".join(str(b) for b in joined[12:])
    return "::1" if joined == b"\0" * 15 + b"\1" else joined.hex()
