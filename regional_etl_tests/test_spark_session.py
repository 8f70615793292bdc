"""The shared local SparkSession as `SparkResource` starts it: loopback only, capped arenas."""

from __future__ import annotations

import os
from pathlib import Path


def _java_children() -> list[int]:
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # the process exited while we looked
        if fields[1] == me and b"java" in cmdline.split(b"\0")[0]:
            found.append(int(stat.parent.name))
    return found


def test_local_session_binds_to_loopback_and_caps_malloc_arenas(spark) -> None:
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1"
    assert conf.get("spark.ui.enabled") == "false"
    [jvm] = _java_children()
    environ = Path(f"/proc/{jvm}/environ").read_bytes().split(b"\0")
    # "2" unless the developer's shell set its own value, which wins.
    assert f"MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']}".encode() in environ
