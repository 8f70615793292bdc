"""Code location load: `dagster definitions validate` wall time, and whether a JVM started.

Two independent signals for the JVM: the process-tree sampler watching the validate process tree
for a `java` descendant, and a probe process that imports the code location and then asks
PySpark whether a SparkContext exists and psutil whether it has a java child. The same command
on an empty code location, and the import times of the big dependencies (each in a fresh
interpreter), say what the load time is made of.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import PROJECT, run_measured
from benchmarks.per_partition import dagster_cli

PROBE = """
import json, os, time
started = time.perf_counter()
import regional_etl.definitions as location
imported = time.perf_counter() - started
from pyspark import SparkContext
from benchmarks.procmon import java_descendants
print("BENCH_RESULT " + json.dumps({
    "import_s": round(imported, 3),
    "jobs": sorted(j.name for j in location.defs.jobs or []),
    "spark_context_active": SparkContext._active_spark_context is not None,
    "java_children": java_descendants(os.getpid()),
}))
"""

IMPORT_TIMER = """
import json, time, importlib
started = time.perf_counter()
importlib.import_module({module!r})
print("BENCH_RESULT " + json.dumps({{"s": round(time.perf_counter() - started, 3)}}))
"""


def measure(repeats: int, env: dict[str, str], logs: Path, warm_up: bool = True) -> dict[str, Any]:
    validate = [dagster_cli(), "definitions", "validate", "-m", "regional_etl.definitions"]
    if warm_up:
        # Unmeasured: the first run on a fresh DAGSTER_HOME creates its SQLite schema, and the
        # first import after generating gigabytes of input may read .pyc files from disk.
        run_measured(validate, env, logs / "validate-warmup.log", cwd=PROJECT)
    # Alternate with the same command on an empty code location (what the Dagster CLI costs by
    # itself), so that both see the same moments of a shared machine.
    runs, floor = [], []
    for i in range(repeats):
        runs.append(run_measured(validate, env, logs / f"validate-{i}.log", cwd=PROJECT))
        empty = [dagster_cli(), "definitions", "validate", "-m", "benchmarks.empty_location"]
        floor.append(run_measured(empty, env, logs / f"validate-empty-{i}.log", cwd=PROJECT).wall_s)
    probe = run_measured([sys.executable, "-c", PROBE], env, logs / "load-probe.log", cwd=PROJECT)
    imports: dict[str, float] = {}
    for module in ("dagster", "pyspark.sql", "dagster_pyspark", "regional_etl.definitions"):
        timings = [
            run_measured(
                [sys.executable, "-c", IMPORT_TIMER.format(module=module)],
                env,
                logs / f"import-{module}-{i}.log",
                cwd=PROJECT,
            ).result.get("s", float("nan"))
            for i in range(repeats)
        ]
        imports[module] = round(statistics.median(timings), 3)
    walls = [r.wall_s for r in runs]
    return {
        "validate_wall_s": round(statistics.median(walls), 3),
        # Other people's jobs only ever add time: the fastest run is the load time itself.
        "validate_best_s": round(min(walls), 3),
        "validate_all_s": [round(w, 3) for w in walls],
        "validate_ok": all(r.returncode == 0 for r in runs),
        "validate_empty_location_s": round(statistics.median(floor), 3),
        "validate_empty_location_best_s": round(min(floor), 3),
        "validate_empty_location_all_s": [round(w, 3) for w in floor],
        "jvm_started": any(r.memory.jvms_seen for r in runs)
        or bool(probe.result.get("spark_context_active"))
        or bool(probe.result.get("java_children")),
        "jvms_seen_by_sampler": max(r.memory.jvms_seen for r in runs),
        "probe": probe.result,
        "import_s": imports,
        "peak_rss_mib": max(r.memory.total_mib for r in runs),
    }
