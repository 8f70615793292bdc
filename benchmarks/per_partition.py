"""(a) One Dagster run per partition, each in its own process, as a naive user would run them.

Every run is a `dagster job execute` CLI process: a new Python interpreter that loads the code
location, starts its own JVM and runs one partition, which is what the default run launcher
does per run (it starts `dagster api execute_run` in a new process). A date costs one
`fx_rates_job` run, one `regional_orders_job` run per region and one `daily_revenue_job` run.

Running all 180 runs of a 30-day backfill would take most of an hour, so a sample is measured
and extrapolated per job: total = days x mean(fx) + days x regions x mean(regional) + days x
mean(gold). The sample runs on tables that hold only the sample, so the extrapolation is, if
anything, low: later runs would replay a longer Delta log.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import PROJECT, run_measured

JOBS = ("fx_rates_job", "regional_orders_job", "daily_revenue_job")


def dagster_cli() -> str:
    """The `dagster` script of this virtualenv (what a user types)."""
    return str(Path(sys.executable).with_name("dagster"))


def partition_tags(job: str, date: str, region: str | None) -> dict[str, str]:
    """The run tags that make a job run one partition (multi-partitions need all three)."""
    if job == "regional_orders_job":
        assert region is not None
        return {
            "dagster/partition": f"{date}|{region}",
            "dagster/partition/date": date,
            "dagster/partition/region": region,
        }
    return {"dagster/partition": date}


def run_one(job: str, date: str, region: str | None, env: dict[str, str], logs: Path) -> dict:
    name = f"{job}-{date}" + (f"-{region}" if region else "")
    argv = [
        dagster_cli(),
        "job",
        "execute",
        "-m",
        "regional_etl.definitions",
        "-j",
        job,
        "--tags",
        json.dumps(partition_tags(job, date, region)),
    ]
    measured = run_measured(argv, env, logs / f"{name}.log", cwd=PROJECT)
    ok = measured.returncode == 0 and "RUN_SUCCESS" in measured.log.read_text(errors="replace")
    return {
        "job": job,
        "partition": f"{date}|{region}" if region else date,
        "ok": ok,
        "wall_s": round(measured.wall_s, 3),
        "memory": measured.memory.to_json(),
        "log": str(measured.log),
    }


def key_of(run: dict[str, Any], key: str) -> float:
    """A run's wall time, or its process tree's CPU time."""
    return run["memory"]["cpu_s"] if key == "cpu_s" else run[key]


def measure(
    dates: list[str],
    regions: list[str],
    sample_dates: list[str],
    sample_regions: list[str],
    env: dict[str, str],
    logs: Path,
) -> dict[str, Any]:
    """Run the sample in dependency order and extrapolate to `dates` x `regions`."""
    runs: list[dict[str, Any]] = []
    for date in sample_dates:
        runs.append(run_one("fx_rates_job", date, None, env, logs))
        for region in sample_regions:
            runs.append(run_one("regional_orders_job", date, region, env, logs))
        runs.append(run_one("daily_revenue_job", date, None, env, logs))

    def mean_of(key: str) -> dict[str, float]:
        return {
            job: statistics.mean(key_of(r, key) for r in runs if r["job"] == job)
            for job in JOBS
            if any(r["job"] == job for r in runs)
        }

    mean, mean_cpu = mean_of("wall_s"), mean_of("cpu_s")
    days, total_regions = len(dates), len(regions)
    counts = {
        "fx_rates_job": days,
        "regional_orders_job": days * total_regions,
        "daily_revenue_job": days,
    }
    # A daily_revenue run over a partial sample of regions fails its all-regions gate (by
    # design): it still pays the whole run, which is what is being measured.
    extrapolated = sum(mean[job] * counts[job] for job in mean)
    extrapolated_cpu = sum(mean_cpu[job] * counts[job] for job in mean_cpu)
    return {
        "sampled_runs": len(runs),
        "sampled_partitions": len(sample_dates) * len(sample_regions),
        "runs_in_full_backfill": sum(counts.values()),
        "mean_run_s": {job: round(s, 3) for job, s in mean.items()},
        "mean_run_cpu_s": {job: round(s, 3) for job, s in mean_cpu.items()},
        "extrapolated_wall_s": round(extrapolated, 3),
        "extrapolated_cpu_s": round(extrapolated_cpu, 3),
        "regional_runs_ok": all(r["ok"] for r in runs if r["job"] == "regional_orders_job"),
        "peak_total_mib": max(r["memory"]["total_mib"] for r in runs),
        "runs": runs,
    }
