"""The shared local SparkSession as `SparkResource` starts it: loopback only, capped arenas."""

from __future__ import annotations

import os
from pathlib import Path

from regional_etl_tests.procs import java_children


def test_local_session_binds_to_loopback_and_caps_malloc_arenas(spark) -> None:
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1"
    assert conf.get("spark.ui.enabled") == "false"
    [jvm] = java_children(os.getpid())
    environ = Path(f"/proc/{jvm}/environ").read_bytes().split(b"\0")
    # "2" unless the developer's shell set its own value, which wins.
    assert f"MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']}".encode() in environ
