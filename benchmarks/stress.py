"""Stress: concurrent runs of the same partitions on landing content that changes every round.

Each round regenerates the four drops of one date with a new seed and size, then starts eight
`regional_orders_job` run processes at once on one Dagster instance (each region twice: bronze,
silver orders and quarantine of the same partitions, written concurrently), then one
`daily_revenue_job` run of the date. After each round every run must have succeeded and every
table must equal the test oracle (`regional_etl_tests/oracle.py`, through the reliability
suite's `judge`): bronze, orders, quarantine and gold, no duplicate key, no line lost.

    bash scripts/stress.sh                       # 10 rounds x 8 runs, 150-250 lines a drop
    bash scripts/stress.sh --rounds 2 --rows 60  # a smoke run
    bash scripts/stress.sh --code /tmp/old       # run processes import another checkout

Prints a table and writes `benchmarks/results/stress-<UTC time>.json`. Not a test: it takes
minutes, and its purpose is to hammer the commit races, not to time anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
DATE = "2024-03-08"
RUN_TIMEOUT_SECONDS = 1800


def _argv(work: Path, fx_url: str, job: str, partition: str) -> list[str]:
    from regional_etl_tests.reliability.conftest import RUN_LAUNCHER

    landing, warehouse = work / "landing", work / "warehouse"
    breaker = work / "breaker.sqlite"
    args = [str(landing), str(warehouse), fx_url, str(breaker), job, partition]
    return [sys.executable, "-c", RUN_LAUNCHER, *args]


def _run_all(argvs: list[list[str]], env: dict[str, str]) -> list[dict[str, Any]]:
    """Start every run process at once; each one's exit code, result line and stderr tail."""
    from regional_etl_tests.procs import process_groups

    results = []
    with process_groups(
        *argvs, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as procs:
        outputs = [p.communicate(timeout=RUN_TIMEOUT_SECONDS) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        last = out.strip().splitlines()[-1] if out.strip() else "{}"
        try:
            result = json.loads(last)
        except ValueError:
            result = {}
        results.append(
            {
                "returncode": proc.returncode,
                "run_id": result.get("run_id"),
                "success": proc.returncode == 0 and result.get("success") is True,
                "stderr_tail": "" if result.get("success") else err[-3000:],
            }
        )
    return results


def stress(rounds: int, rows: int, code: Path, keep: bool) -> dict[str, Any]:
    from regional_etl.contract import REGIONS
    from regional_etl.fx.server import FXServer
    from regional_etl.generate import generate_landing
    from regional_etl.spark import server as spark_server
    from regional_etl.spark.resource import SparkResource
    from regional_etl_tests.reliability.conftest import judge

    spark_server.ensure_running()
    work = Path(tempfile.mkdtemp(prefix="regional-etl-stress-"))
    home = work / "dagster_home"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": str(code), "DAGSTER_HOME": str(home)}
    day = dt.date.fromisoformat(DATE)
    partitions = [(DATE, region) for region in REGIONS]
    spark = SparkResource(session_config={"spark.sql.shuffle.partitions": "2"}).spark_session
    report: dict[str, Any] = {
        "date": DATE,
        "rounds": [],
        "rows_range": [rows - rows // 4, rows + rows // 4],
        "code": str(code),
        "work": str(work),
        "runs_per_round": 2 * len(REGIONS),
    }
    try:
        with FXServer() as fx:
            # The tables exist first, as in production: FX of the date, then one round's worth.
            generate_landing(work / "landing", day, day, rows=rows, seed=1000, anomalies=True)
            setup = [
                _argv(work, fx.url, "fx_rates_job", DATE),
            ]
            for region in REGIONS:
                setup.append(_argv(work, fx.url, "regional_orders_job", f"{DATE}|{region}"))
            for argv in setup:
                [result] = _run_all([argv], env)
                if not result["success"]:
                    raise RuntimeError(f"set-up run failed: {result['stderr_tail']}")
            for n in range(1, rounds + 1):
                # New content every round: another seed, another size.
                size = rows - rows // 4 + (n * 37) % (rows // 2 + 1)
                generate_landing(work / "landing", day, day, rows=size, seed=n, anomalies=True)
                started = time.monotonic()
                argvs = [
                    _argv(work, fx.url, "regional_orders_job", f"{DATE}|{region}")
                    for region in REGIONS
                    for _ in range(2)
                ]
                runs = _run_all(argvs, env)
                concurrent_seconds = time.monotonic() - started
                [gold] = _run_all([_argv(work, fx.url, "daily_revenue_job", DATE)], env)
                verdict = judge(spark, work / "landing", work / "warehouse", partitions)
                failed = [r for r in [*runs, gold] if not r["success"]]
                row = {
                    "round": n,
                    "rows_per_drop": size,
                    "runs": len(runs),
                    "failed_runs": sum(not r["success"] for r in runs),
                    "gold_run_ok": gold["success"],
                    "concurrent_seconds": round(concurrent_seconds, 1),
                    "landing_lines": verdict.landing_lines,
                    "lines_lost": verdict.lines_lost,
                    "duplicate_keys": verdict.duplicate_keys,
                    "mismatches": verdict.mismatches,
                    "equals_oracle": verdict.ok,
                    "failures": [r["stderr_tail"] for r in failed],
                }
                report["rounds"].append(row)
                _print_row(row, header=n == 1)
    finally:
        spark.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    report["ok"] = (
        all(
            r["failed_runs"] == 0 and r["gold_run_ok"] and r["equals_oracle"]
            for r in report["rounds"]
        )
        and len(report["rounds"]) == rounds
    )
    return report


COLUMNS = (
    ("round", 5),
    ("rows_per_drop", 13),
    ("runs", 4),
    ("failed_runs", 11),
    ("gold_run_ok", 11),
    ("landing_lines", 13),
    ("lines_lost", 10),
    ("duplicate_keys", 14),
    ("equals_oracle", 13),
    ("concurrent_seconds", 18),
)


def _print_row(row: dict[str, Any], header: bool) -> None:
    if header:
        print(" | ".join(name.ljust(width) for name, width in COLUMNS), flush=True)
        print("-|-".join("-" * width for _, width in COLUMNS), flush=True)
    print(" | ".join(str(row[name]).ljust(width) for name, width in COLUMNS), flush=True)
    for mismatch in row["mismatches"][:5]:
        print(f"    mismatch: {mismatch}", flush=True)
    for failure in row["failures"][:2]:
        print("    failed run: " + failure.strip().splitlines()[-1][:300], flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rows", type=int, default=200, help="mean landing lines per drop")
    parser.add_argument(
        "--code", type=Path, default=PROJECT, help="checkout the run processes import"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--out", type=Path, default=None, help="JSON result path")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = stress(args.rounds, args.rows, args.code.resolve(), args.keep)
    report["seconds"] = round(time.monotonic() - started, 1)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or PROJECT / "benchmarks" / "results" / f"stress-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    rounds = report["rounds"]
    print(
        f"rounds={len(rounds)} runs={sum(r['runs'] for r in rounds)} "
        f"failed_runs={sum(r['failed_runs'] for r in rounds)} "
        f"rounds_equal_to_oracle={sum(r['equals_oracle'] for r in rounds)} "
        f"seconds={report['seconds']} ok={report['ok']} json={out}",
        flush=True,
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
