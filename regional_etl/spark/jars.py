"""The Delta Lake jars: resolved once at set-up into a cache the project controls, then only read.

Spark's own ``spark.jars.packages`` resolution runs Ivy at every session start (network, and a
shared cache that is unsafe for concurrent processes). Instead ``regional-etl setup-jars``
resolves the coordinate once into ``$REGIONAL_ETL_JARS_DIR`` (default ``<project>/.cache/jars``)
and writes a manifest; every session afterwards passes the local files as ``spark.jars``.

A resolution is also kept per coordinate in the user's cache (``~/.cache/regional-etl/jars``), as
pip keeps its wheels: a second checkout on the same machine (a clean clone in CI) copies the jars
from there instead of starting a JVM to fetch the same 33 files from Maven Central again.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

from regional_etl import settings
from regional_etl.io.files import atomic_write

SCALA_VERSION = "2.13"
MANIFEST = "manifest.json"


class JarsNotResolvedError(RuntimeError):
    """The Delta jars were not resolved at set-up; sessions refuse to download them at run time."""


def delta_coordinate() -> str:
    """The Maven coordinate that matches the installed pyspark and delta-spark."""
    spark_minor = ".".join(version("pyspark").split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_{SCALA_VERSION}:{version('delta-spark')}"


def jars_dir() -> Path:
    # The checkout's own cache: this file is <checkout>/regional_etl/spark/jars.py.
    default = Path(__file__).resolve().parents[2] / ".cache" / "jars"
    return Path(settings.JARS_DIR.get() or default).resolve()


def resolved_jars(directory: Path | None = None) -> list[str]:
    """Local jar paths for the current coordinate; a clear error when set-up was not run."""
    directory = directory or jars_dir()
    manifest = directory / MANIFEST
    coordinate = delta_coordinate()
    hint = "run `regional-etl setup-jars` (scripts/setup.sh does it) once to resolve them"
    if not manifest.exists():
        raise JarsNotResolvedError(f"no Delta jars in {directory}: {hint}")
    data = json.loads(manifest.read_text())
    if data.get("coordinate") != coordinate:
        raise JarsNotResolvedError(
            f"{manifest} holds jars for {data.get('coordinate')}, not {coordinate}: {hint}"
        )
    jars = [str(directory / name) for name in data["jars"]]
    missing = [j for j in jars if not Path(j).exists()]
    if missing:
        raise JarsNotResolvedError(f"jars listed in {manifest} are missing: {missing}; {hint}")
    return jars


def user_cache_dir() -> Path:
    """This coordinate's jars in the user's cache, shared by every checkout on the machine."""
    name = delta_coordinate().replace(":", "_")
    root = Path(settings.XDG_CACHE_HOME.get() or "~/.cache").expanduser()
    return root / "regional-etl" / "jars" / name


def _copy_jars(names: list[str], source: Path, directory: Path) -> list[str]:
    """Copy `names` from `source` and write the manifest last, so that a manifest is only ever
    beside a complete set (an interrupted copy resolves again)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(source / name, directory / name)
    manifest = {"coordinate": delta_coordinate(), "jars": names}
    atomic_write(directory / MANIFEST, json.dumps(manifest, indent=2))
    return [str(directory / n) for n in names]


def resolve_jars(directory: Path | None = None) -> list[str]:
    """Resolve the Delta coordinate and its runtime dependencies with Spark's Ivy, once.

    Idempotent: a manifest for the current coordinate short-circuits, and a resolution in the
    user's cache is copied. Otherwise it runs in a throwaway local session so that the
    resolution itself uses exactly the code path Spark would use.
    """
    directory = directory or jars_dir()
    try:
        return resolved_jars(directory)
    except JarsNotResolvedError:
        pass
    cache = user_cache_dir()
    try:
        cached = resolved_jars(cache)
    except JarsNotResolvedError:
        cached = None
    if cached is not None:
        return _copy_jars([Path(j).name for j in cached], cache, directory)
    names = _resolve_with_ivy(directory)
    _copy_jars(names, directory, cache)
    return [str(directory / n) for n in names]


def _resolve_with_ivy(directory: Path) -> list[str]:
    from pyspark.sql import SparkSession

    coordinate = delta_coordinate()
    with tempfile.TemporaryDirectory(prefix="regional-etl-ivy-") as ivy:
        spark = (
            SparkSession.builder.master("local[1]")
            .appName("regional-etl-setup-jars")
            .config("spark.jars.packages", coordinate)
            .config("spark.jars.ivy", ivy)
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .getOrCreate()
        )
        try:
            names = sorted(jar.name for jar in Path(ivy, "jars").glob("*.jar"))
            if not any(n.startswith("io.delta_delta-spark") for n in names):
                raise JarsNotResolvedError(f"Ivy did not resolve {coordinate}: got {names}")
            _copy_jars(names, Path(ivy, "jars"), directory)
        finally:
            spark.stop()
    return names
