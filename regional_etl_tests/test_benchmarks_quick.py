"""The benchmark's quick mode runs end to end, so the benchmark cannot rot.

Only completion, the printed table and the JSON's shape are checked: never a timing, because
the machine (CI or a shared laptop) decides those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from regional_etl_tests.procs import process_groups

PROJECT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_completes_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONAL_ETL_FX_FAULT_")}
    argv = [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)]
    # Its runs, JVMs and servers are in its process group: all of it ends with the test.
    with process_groups(
        argv, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as [proc]:
        stdout, stderr = proc.communicate(timeout=3600)
    assert proc.returncode == 0, stdout[-4000:] + stderr[-4000:]
    for heading in (
        "1. Backfill",
        "(a) one run per partition",
        "(b) run_backfill",
        "(c) bare PySpark",
        "a/b = ",
        "2. Quality gate",
        "3. Code location load",
        "4. Peak memory",
        "5. Scaling",
    ):
        assert heading in stdout, f"{heading!r} missing from:\n{stdout}"

    files = list(out.glob("quick-*.json"))
    assert len(files) == 1, files
    results = json.loads(files[0].read_text())
    assert results["mode"] == "quick"
    sections = {"machine", "sizes", "input", "load", "backfill", "ui_backfill", "per_partition"}
    sections |= {"gate", "scaling"}
    assert sections <= set(results)
    assert {"nproc", "memory_gib", "cpu_model"} <= set(results["machine"])
    summary = results["summary"]
    for key in (
        "wall_s",
        "rows_per_s",
        "a_over_b",
        "b_over_c",
        "gate_over_count",
        "load_s",
        "memory_peak_gib",
        "scaling",
    ):
        assert key in summary, key
    # The runs did their work (not how fast): every partition of (b) succeeded, the bare script
    # wrote every landing line to bronze, and the gate variants agree with the package's gate.
    assert results["backfill"]["b"]["result"]["ok"] is True
    assert results["backfill"]["c"]["result"]["ok"] is True
    assert results["backfill"]["c_optimized"]["result"]["ok"] is True
    assert results["per_partition"]["regional_runs_ok"] is True
    # The UI's path: the asset backfill the webserver took completed every asset of both days.
    ui = results["ui_backfill"]["u"]
    assert ui["status"] == "COMPLETED_SUCCESS", ui
    assert ui["materialized"]["daily_revenue"] == 2 and ui["materialized"]["orders"] == 8, ui
    assert results["ui_backfill"]["b"]["result"]["ok"] is True
    assert all(results["gate"]["result"]["agrees_with_gate"].values())
    assert results["load"]["validate_ok"] is True
