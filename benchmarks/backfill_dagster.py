"""Worker (b): our backfill path, `regional_etl.backfill.run_backfill` (the runs of a Dagster
asset backfill executed in this one process, as `regional-etl backfill` executes them without a
daemon).

Started by the entry command in a fresh process (so the wall time it measures includes Python
imports, as `regional-etl backfill` would pay). Resources mirror the test suite's `pipeline`
fixture, with the product's Spark resource: a Spark Connect client of the local server, which
the entry command starts (warm) before it starts this process.

    python -m benchmarks.backfill_dagster --landing L --warehouse W --fx-url U --start D --end D
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

T0 = time.perf_counter()  # before the heavy imports: import time is part of what a run pays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--landing", required=True)
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--fx-url", required=True)
    parser.add_argument("--start", required=True)
    parser.add_argument("--end", required=True)
    parser.add_argument("--min-rows", type=int, required=True)
    parser.add_argument(
        "--spark-conf", default="{}", help="JSON of Spark SQL session settings (experiments only)"
    )
    args = parser.parse_args(argv)

    from dagster import DagsterInstance

    from benchmarks.common import MAX_QUARANTINE_RATIO, emit
    from regional_etl.backfill import run_backfill
    from regional_etl.checks import QualityGateResource
    from regional_etl.definitions import build_definitions
    from regional_etl.resources.fx import FXRatesResource
    from regional_etl.resources.warehouse import WarehouseResource
    from regional_etl.spark.resource import SparkResource

    home = Path(os.environ["DAGSTER_HOME"])
    resources: dict[str, Any] = {
        "spark": SparkResource(session_config=json.loads(args.spark_conf)),
        "warehouse": WarehouseResource(landing_root=args.landing, warehouse_root=args.warehouse),
        "quality_gates": QualityGateResource(
            min_rows=args.min_rows, max_quarantine_ratio=MAX_QUARANTINE_RATIO
        ),
        "fx": FXRatesResource(
            base_url=args.fx_url, breaker_storage_url=f"sqlite:///{home / 'breaker.sqlite'}"
        ),
    }
    defs = build_definitions(resources)
    imported = time.perf_counter()
    instance = DagsterInstance.get()
    report = run_backfill(
        defs,
        instance,
        args.start,
        args.end,
        landing_root=args.landing,
        progress=lambda state: print(state, flush=True),
    )
    finished = time.perf_counter()

    runs = []
    for run_id in report.runs:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        stats = instance.get_run_stats(run_id)
        steps = instance.get_run_step_stats(run_id)
        run_s = (stats.end_time or 0) - (stats.start_time or 0)
        step_s = sum((s.end_time or 0) - (s.start_time or 0) for s in steps)
        runs.append(
            {
                "assets": sorted(k.to_user_string() for k in run.asset_selection or []),
                "ok": run_id not in report.failed_runs,
                "run_s": round(run_s, 3),
                "steps_s": round(step_s, 3),
                "events": len(instance.all_logs(run_id)),
            }
        )
    emit(
        {
            "ok": report.ok,
            "partitions_succeeded": report.count("succeeded"),
            "partitions": len(report.outcomes),
            "import_and_definitions_s": round(imported - T0, 3),
            "backfill_s": round(finished - imported, 3),
            "runs": runs,
        }
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
