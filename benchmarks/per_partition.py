"""(a) One Dagster run per partition, each in its own process, on both Spark paths side by side.

Every run is a `dagster job execute` CLI process: a new Python interpreter that loads the code
location and runs one partition, which is what the default run launcher does per run (it starts
`dagster api execute_run` in a new process). A date costs one `fx_rates_job` run, one
`regional_orders_job` run per region and one `daily_revenue_job` run.

Two paths, runs alternating between them so they share the machine's noise:

- `connect`, the product (`-m regional_etl.definitions`): each run is a thin Spark Connect client
  of the warm local server; its memory and CPU time include the server JVM's while it runs.
- `classic`, for comparison (`-m benchmarks.classic_location`): each run starts its own JVM
  and runs its Spark code cold.

Each path has its own instance and warehouse. Running all 180 runs of a 30-day backfill on both
paths would take hours, so a sample is measured and extrapolated per job with the medians:
total = days x fx + days x regions x regional + days x gold. The sample runs on tables that hold
only the sample, so the extrapolation is, if anything, low: later runs replay a longer Delta log.

`concurrent` launches the regional runs of one date at once on the Connect path and samples the
memory of all of them plus the server: N concurrent runs should hold one JVM between them.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.common import PROJECT, run_measured, spawn, stop_group
from benchmarks.procmon import TreeSampler

JOBS = ("fx_rates_job", "regional_orders_job", "daily_revenue_job")
# The code location of each path, as `dagster job execute -m` loads it.
LOCATIONS = {"classic": "benchmarks.classic_location", "connect": "regional_etl.definitions"}


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


def execute_argv(path: str, job: str, date: str, region: str | None) -> list[str]:
    tags = json.dumps(partition_tags(job, date, region))
    return [dagster_cli(), "job", "execute", "-m", LOCATIONS[path], "-j", job, "--tags", tags]


def run_name(path: str, job: str, date: str, region: str | None) -> str:
    return f"{path}-{job}-{date}" + (f"-{region}" if region else "")


def succeeded(log: Path) -> bool:
    return "RUN_SUCCESS" in log.read_text(errors="replace")


def run_one(
    path: str,
    job: str,
    date: str,
    region: str | None,
    env: dict[str, str],
    logs: Path,
    shared: tuple[int, ...],
) -> dict[str, Any]:
    log = logs / f"{run_name(path, job, date, region)}.log"
    measured = run_measured(execute_argv(path, job, date, region), env, log, PROJECT, 1800, shared)
    return {
        "path": path,
        "job": job,
        "partition": f"{date}|{region}" if region else date,
        "ok": measured.returncode == 0 and succeeded(log),
        "wall_s": round(measured.wall_s, 3),
        "memory": measured.memory.to_json(),
        "log": str(log),
    }


def _median(runs: list[dict[str, Any]], job: str, key: str) -> float | None:
    values = [r["memory"]["cpu_s"] if key == "cpu_s" else r[key] for r in runs if r["job"] == job]
    return statistics.median(values) if values else None


def summarize_path(runs: list[dict[str, Any]], days: int, regions: int) -> dict[str, Any]:
    """Medians per job, and the extrapolation to every partition of `days` x `regions`."""
    counts = {
        "fx_rates_job": days,
        "regional_orders_job": days * regions,
        "daily_revenue_job": days,
    }
    median = {job: _median(runs, job, "wall_s") for job in JOBS}
    median_cpu = {job: _median(runs, job, "cpu_s") for job in JOBS}
    # A daily_revenue run over a partial sample of regions fails its all-regions gate (by
    # design): it still pays the whole run, which is what is being measured.
    return {
        "sampled_runs": len(runs),
        "median_run_s": {j: round(s, 3) for j, s in median.items() if s is not None},
        "median_run_cpu_s": {j: round(s, 3) for j, s in median_cpu.items() if s is not None},
        "regional_run_s": [r["wall_s"] for r in runs if r["job"] == "regional_orders_job"],
        "extrapolated_wall_s": round(sum((median[j] or 0) * counts[j] for j in JOBS), 3),
        "extrapolated_cpu_s": round(sum((median_cpu[j] or 0) * counts[j] for j in JOBS), 3),
        "regional_runs_ok": all(r["ok"] for r in runs if r["job"] == "regional_orders_job"),
        "peak_total_mib": max(r["memory"]["total_mib"] for r in runs),
        "max_jvms_seen": max(r["memory"]["jvms_seen"] for r in runs),
        "runs": runs,
    }


def measure(
    dates: list[str],
    regions: list[str],
    sample_dates: list[str],
    sample_regions: list[str],
    envs: dict[str, dict[str, str]],
    logs: Path,
    server_pid: int,
    say: Any = print,
) -> dict[str, Any]:
    """Run the sample on both paths, alternating, each in dependency order; extrapolate."""
    steps: list[tuple[str, str, str | None]] = []
    for date in sample_dates:
        steps.append(("fx_rates_job", date, None))
        steps += [("regional_orders_job", date, region) for region in sample_regions]
        steps.append(("daily_revenue_job", date, None))
    runs: dict[str, list[dict[str, Any]]] = {path: [] for path in LOCATIONS}
    for n, (job, date, region) in enumerate(steps):
        # Alternate who goes first too: a slow spell of the machine hits both paths.
        order = ("classic", "connect") if n % 2 == 0 else ("connect", "classic")
        for path in order:
            shared = (server_pid,) if path == "connect" else ()
            run = run_one(path, job, date, region, envs[path], logs, shared)
            runs[path].append(run)
            say(f"  {path:7} {run['partition']:22} {job:20} {run['wall_s']:7.1f}s ok={run['ok']}")
    paths = {p: summarize_path(r, len(dates), len(regions)) for p, r in runs.items()}
    classic = paths["classic"]["median_run_s"].get("regional_orders_job")
    connect = paths["connect"]["median_run_s"].get("regional_orders_job")
    return {
        "sampled_runs": sum(len(r) for r in runs.values()),
        "sampled_partitions": len(sample_dates) * len(sample_regions),
        "runs_in_full_backfill": len(dates) * (len(regions) + 2),
        "paths": paths,
        "classic_over_connect_regional": round(classic / connect, 2)
        if classic and connect
        else None,
        # Kept for the quick test: every regional run of both paths succeeded.
        "regional_runs_ok": all(p["regional_runs_ok"] for p in paths.values()),
    }


def concurrent(
    date: str,
    regions: list[str],
    env: dict[str, str],
    logs: Path,
    server_pid: int,
    timeout: float = 1800,
) -> dict[str, Any]:
    """The regional runs of `date` launched at once on the Connect path, as separate processes;
    the peak resident memory of all their trees plus the server's, and the JVMs among them."""
    from regional_etl.spark import server as spark_server

    state = spark_server.read_state()
    before = spark_server.describe(state) if state else None
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ExitStack() as stack:
        procs = []
        for region in regions:
            log = logs / f"{run_name('connect', 'regional_orders_job', date, region)}.log"
            out = stack.enter_context(open(log, "wb"))
            argv = execute_argv("connect", "regional_orders_job", date, region)
            proc = spawn(argv, env, out, PROJECT)
            stack.callback(stop_group, proc)  # on any way out, this run's group is gone
            procs.append((region, proc, log))
        walls: dict[str, float] = {}
        with TreeSampler([p.pid for _, p, _ in procs], shared=(server_pid,)) as sampler:
            deadline = time.monotonic() + timeout
            while len(walls) < len(procs) and time.monotonic() < deadline:
                for region, proc, _ in procs:
                    if region not in walls and proc.poll() is not None:
                        walls[region] = round(time.perf_counter() - started, 3)
                time.sleep(0.2)
            sampler.wait_for_tree()
    peaks = sampler.peaks.to_json()
    return {
        "date": date,
        "runs": len(procs),
        "ok": all(p.returncode == 0 and succeeded(log) for _, p, log in procs),
        "timed_out": len(walls) < len(procs),
        "wall_s": walls,
        "all_done_s": max(walls.values()) if walls else None,
        "memory": peaks,
        "server_pid": server_pid,
        "server_before": before,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
