"""The benchmark's quick mode, a smoke run of every section, runs end to end, so the benchmark
cannot rot: each section really runs (real Spark and Delta on the local server, real Dagster runs,
a real webserver and daemon for the UI path) at tiny sizes.

Only completion, the printed table and the JSON's contents are checked: never a timing, because
the machine (CI or a shared laptop) decides those. The full benchmark is `python -m
benchmarks.run`, a separate command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import QUICK
from benchmarks.ui_backfill import SMOKE_ASSETS
from regional_etl.contract import REGIONS
from regional_etl_tests.e2e_support import daemon_tick_env
from regional_etl_tests.procs import process_groups

PROJECT = Path(__file__).resolve().parent.parent
PARTITIONS = QUICK.days * len(REGIONS)


@pytest.mark.slow
def test_quick_benchmark_completes_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONAL_ETL_FX_FAULT_")}
    # A smoke run times nothing: its UI backfill's daemon need not idle 30 s per level.
    env = daemon_tick_env(env)
    argv = [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)]
    # Its runs, JVMs and servers are in its process group: all of it ends with the test.
    with process_groups(
        argv, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as [proc]:
        stdout, stderr = proc.communicate(timeout=1200)
    assert proc.returncode == 0, stdout[-4000:] + stderr[-4000:]
    for heading in (
        "SMOKE RUN",
        "1. Backfill",
        "(a) one run per partition",
        "(a0) one run per partition",
        "(b) run_backfill",
        "(r) reference PySpark script",
        "(d) DuckDB reference",
        "(c) bare PySpark",
        "(c') bare PySpark",
        "a/b = ",
        "b/r = ",
        "b/d = ",
        "2. Quality gate",
        "3. Code location load",
        "4. Peak memory",
        "4b. 2 concurrent regional runs",
        "5. Scaling",
        "UI backfill",
        "6. Step profile of (b)",
        "(u) daemon ticks waited",
    ):
        assert heading in stdout, f"{heading!r} missing from:\n{stdout}"
    # Every figure was computed: a missing measurement prints as n/a.
    assert "WARNING" not in stdout, stdout

    files = list(out.glob("quick-*.json"))
    assert len(files) == 1, files
    results = json.loads(files[0].read_text())
    assert results["mode"] == "quick" and results["sizes"]["smoke"] is True
    sections = {"machine", "sizes", "input", "load", "backfill", "ui_backfill", "per_partition"}
    sections |= {"gate", "scaling", "profile"}
    assert sections <= set(results)
    assert {"nproc", "memory_gib", "cpu_model"} <= set(results["machine"])
    assert results["input"]["lines"] > 0
    summary = results["summary"]
    for key in (
        "wall_s",
        "rows_per_s",
        "a_over_b",
        "b_over_c",
        "b_over_r",
        "b_over_d",
        "gate_over_count",
        "load_s",
        "memory_peak_gib",
        "scaling",
        "classic_over_connect_run",
        "concurrent_peak_gib",
        "ui_backfill",
    ):
        assert summary.get(key) is not None, key
    # Sane, not fast: every variant took some time and did some work.
    assert all(v and v > 0 for v in summary["wall_s"].values()), summary["wall_s"]
    assert summary["memory_peak_gib"] > 0

    # The runs did their work (not how fast): every partition of (b) succeeded, the bare script
    # wrote every landing line to bronze, and the gate variants agree with the package's gate.
    backfill = results["backfill"]
    assert backfill["b"]["result"]["ok"] is True
    assert backfill["b"]["result"]["partitions_succeeded"] == PARTITIONS
    assert backfill["c"]["result"]["ok"] is True
    # Both fixed references ran over every partition, and their tables matched the oracle's (a
    # mismatch fails the benchmark itself).
    for reference in ("r", "d"):
        assert backfill[reference]["result"]["ok"] is True
        assert backfill[reference]["checked"]["partitions"] == PARTITIONS, backfill[reference]
    assert backfill["c_optimized"]["result"]["ok"] is True
    # (a): every sampled run of both paths, and the concurrent runs, succeeded.
    per_partition = results["per_partition"]
    assert per_partition["regional_runs_ok"] is True
    assert all(p["sampled_runs"] == 3 for p in per_partition["paths"].values())
    concurrent = per_partition["concurrent"]
    assert concurrent["ok"] is True and concurrent["runs"] == QUICK.concurrent_runs, concurrent
    assert not concurrent["timed_out"]
    # The UI's path: the asset backfill the webserver took completed what it selected, one layer
    # of the graph (SMOKE_ASSETS: why). The same backfill over every layer is asserted through
    # the browser by test_ui.py::test_browser_materializes_all_over_a_date_range.
    ui = results["ui_backfill"]["u"]
    assert ui["status"] == "COMPLETED_SUCCESS", ui
    assert ui["materialized"] == {asset: QUICK.days for asset in SMOKE_ASSETS}, ui
    assert ui["runs"] == 1, ui
    assert results["ui_backfill"]["b"]["result"]["ok"] is True
    gate = results["gate"]["result"]
    assert gate["rows"] > 0 and all(gate["agrees_with_gate"].values()), gate
    assert results["load"]["validate_ok"] is True
    assert results["load"]["jvm_started"] is False
    # The step profile counted real calls: every run asked Spark and committed to Delta.
    profile = summary["profile"]
    assert results["profile"]["result"]["ok"] is True
    assert [r["run"] for r in profile["rows"]] == [
        "fx_rates",
        "raw_orders",
        "orders+orders_quarantine",
        "daily_revenue",
    ], profile["rows"]
    assert all(
        r["spark_actions"] > 0 and r["commits"] >= r["delta_writes"] > 0 for r in profile["rows"]
    )
    # Scaling: both points ran, on twice the lines.
    scaling = summary["scaling"]
    assert [p["factor"] for p in scaling] == list(QUICK.scale_factors)
    assert scaling[1]["lines"] > scaling[0]["lines"] > 0
    assert all(s["b"]["result"]["ok"] for s in results["scaling"])
