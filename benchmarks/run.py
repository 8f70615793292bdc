"""Benchmarks of regional_etl: backfill throughput, gate cost, code-location load, memory, scaling.

    python -m benchmarks.run            # full mode: 30 days x 4 regions x 25,000 rows (long)
    python -m benchmarks.run --quick    # a smoke run of every section at tiny sizes (CI)

Generates its own input with `regional_etl.generate`, serves FX rates from the bundled service
on a loopback port, runs every workload in a fresh process (so start-up costs count and memory is
sampled per process tree), prints a table and writes the numbers to
`benchmarks/results/<mode>-<UTC time>.json`. See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks import first_click, load, per_partition, step_profile
from benchmarks.common import (
    CLASSIC_ON_SERVER,
    FULL,
    PROJECT,
    QUICK,
    Measured,
    Sizes,
    dagster_home,
    delta_files,
    landing_lines,
    pipeline_env,
    python_module,
    run_measured,
    worker_argv,
)
from benchmarks.procmon import machine
from benchmarks.reference_check import ReferenceMismatch, check_warehouse
from benchmarks.report import format_report, summarize
from benchmarks.ui_backfill import SMOKE_ASSETS, run_ui_backfill
from regional_etl_tests.browser import ARTIFACTS

SECTIONS = (
    "load",
    "backfill",
    "ui_backfill",
    "per_partition",
    "gate",
    "scaling",
    "profile",
    "first_click",
)
RESULTS = Path(__file__).resolve().parent / "results"
TABLES = ("bronze/raw_orders", "silver/orders", "silver/orders_quarantine")


def generate(root: Path, sizes: Sizes, rows: int) -> dict[str, Any]:
    """The backfill's landing zone, with the contract's anomalies (the realistic case)."""
    from regional_etl.generate import generate_landing

    start = dt.date.fromisoformat(sizes.start)
    started = time.perf_counter()
    generate_landing(
        root,
        start,
        start + dt.timedelta(days=sizes.days - 1),
        rows=rows,
        seed=2024,
        anomalies=True,
        files_per_drop=sizes.files_per_drop,
    )
    return {
        "root": str(root),
        "rows_per_partition": rows,
        "lines": landing_lines(root),
        "generate_s": round(time.perf_counter() - started, 3),
    }


def end_date(sizes: Sizes) -> str:
    return (dt.date.fromisoformat(sizes.start) + dt.timedelta(days=sizes.days - 1)).isoformat()


def with_load(measured: Measured, before: tuple[float, ...]) -> dict[str, Any]:
    """A measurement plus the 1-minute load average around it: the noise, stated."""
    data = measured.to_json()
    data["load_average_1m"] = [round(before[0], 2), round(os.getloadavg()[0], 2)]
    return data


def run_backfill_b(
    work: Path,
    name: str,
    landing: Path,
    sizes: Sizes,
    rows: int,
    fx_url: str,
    server_pid: int,
    worker: str = "benchmarks.backfill_dagster",
) -> dict[str, Any]:
    """(b): `run_backfill` in a fresh process, on a fresh instance and warehouse; a Spark Connect
    client, so the server JVM's memory and CPU time while it runs are counted with it.
    `worker`: the step profile's stands in for (b) in a smoke run (the same run, timed)."""
    home = dagster_home(work / f"home-{name}")
    warehouse = work / f"warehouse-{name}"
    env = pipeline_env(home, landing, warehouse, fx_url, max(1, rows // 2))
    argv = worker_argv(
        worker,
        landing,
        warehouse,
        sizes.start,
        end_date(sizes),
        *("--fx-url", fx_url, "--min-rows", str(max(1, rows // 2))),
    )
    before = os.getloadavg()
    log = work / "logs" / f"{name}.log"
    measured = run_measured(argv, env, log, cwd=PROJECT, shared=(server_pid,))
    data = with_load(measured, before)
    data["tables"] = {t: delta_files(warehouse / t) for t in TABLES}
    return data


def run_bare_c(
    work: Path, name: str, landing: Path, sizes: Sizes, fx_url: str, optimized: bool
) -> dict[str, Any]:
    """(c): the bare PySpark script in a fresh process, on the first `sizes.bare_regions`
    regions; `optimized` applies the proposals."""
    from regional_etl.contract import REGIONS

    home = dagster_home(work / f"home-{name}")  # unused by the script; keeps the env identical
    warehouse = work / f"warehouse-{name}"
    env = pipeline_env(home, landing, warehouse, fx_url, 1)
    argv = worker_argv(
        "benchmarks.bare_spark",
        landing,
        warehouse,
        sizes.start,
        end_date(sizes),
        *("--regions", ",".join(REGIONS[: sizes.bare_regions])),
        *(["--optimized"] if optimized else []),
    )
    before = os.getloadavg()
    measured = run_measured(argv, env, work / "logs" / f"{name}.log", cwd=PROJECT)
    data = with_load(measured, before)
    data["tables"] = {t: delta_files(warehouse / t) for t in TABLES}
    return data


# The fixed references (benchmarks/README.md): the module each runs, and what it writes.
REFERENCES = {
    "r": ("benchmarks.reference_spark", "delta"),
    "d": ("benchmarks.reference_duckdb", "parquet"),
}


def run_reference(
    work: Path, name: str, variant: str, landing: Path, sizes: Sizes, fx_url: str
) -> dict[str, Any]:
    """(r) or (d): a fixed reference in a fresh process over every region of the range, then its
    tables checked against the oracle (untimed); a mismatch raises `ReferenceMismatch`."""
    from regional_etl.contract import REGIONS
    from regional_etl.partitions import date_range

    module, storage = REFERENCES[variant]
    home = dagster_home(work / f"home-{name}")  # unused by the script; keeps the env identical
    warehouse = work / f"warehouse-{name}"
    env = pipeline_env(home, landing, warehouse, fx_url, 1)
    argv = worker_argv(module, landing, warehouse, sizes.start, end_date(sizes))
    before = os.getloadavg()
    measured = run_measured(argv, env, work / "logs" / f"{name}.log", cwd=PROJECT)
    data = with_load(measured, before)
    if measured.returncode != 0 or not measured.result.get("ok"):
        raise ReferenceMismatch(f"({variant}) {module} failed; its log: {measured.log}")
    data["tables"] = {t: delta_files(warehouse / t) for t in TABLES}
    checking = time.perf_counter()
    data["checked"] = check_warehouse(
        f"({variant}) {module}",
        warehouse,
        storage,
        landing,
        date_range(sizes.start, end_date(sizes)),
        list(REGIONS),
    )
    data["check_s"] = round(time.perf_counter() - checking, 3)
    return data


def run_gate(work: Path, sizes: Sizes, fx_url: str) -> dict[str, Any]:
    """The gate benchmark on one large partition generated for it."""
    from regional_etl.generate import generate_landing

    landing = work / "landing-gate"
    day = dt.date.fromisoformat(sizes.start)
    started = time.perf_counter()
    generate_landing(
        landing,
        day,
        day,
        rows=sizes.gate_rows,
        seed=7,
        anomalies=True,
        regions=["eu-west"],
        files_per_drop=sizes.gate_files,
    )
    generated = time.perf_counter() - started
    env = pipeline_env(dagster_home(work / "home-gate"), landing, work / "wh-gate", fx_url, 1)
    argv = python_module(
        "benchmarks.gate",
        "--landing",
        str(landing),
        "--date",
        sizes.start,
        "--region",
        "eu-west",
        "--repeats",
        str(sizes.gate_repeats),
        *(["--no-warm-up"] if sizes.smoke else []),
    )
    before = os.getloadavg()
    measured = run_measured(argv, env, work / "logs" / "gate.log", cwd=PROJECT)
    data = with_load(measured, before)
    data["generate_s"] = round(generated, 3)
    shutil.rmtree(landing, ignore_errors=True)
    return data


def best_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each variant's fastest round, with every round's wall and CPU time alongside."""
    best: dict[str, Any] = {}
    for variant in rounds[0]:
        runs = [r[variant] for r in rounds]
        chosen = dict(min(runs, key=lambda m: m["wall_s"]))
        chosen["rounds_wall_s"] = [m["wall_s"] for m in runs]
        chosen["rounds_cpu_s"] = [m["memory"]["cpu_s"] for m in runs]
        chosen["rounds_peak_total_mib"] = [m["memory"]["total_mib"] for m in runs]
        best[variant] = chosen
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run at tiny sizes (CI); measures nothing"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--days", type=int, help="override the mode's number of days (a reduced run)"
    )
    parser.add_argument(
        "--rounds", type=int, help="override the mode's rounds of (b), (c) and (u) (best counts)"
    )
    parser.add_argument(
        "--report", type=Path, help="only print the table of an earlier results JSON file"
    )
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads(args.report.read_text())
        results["summary"] = summarize(results)
        print(format_report(results))
        return 0
    # A SIGTERM (a timeout, a CI cancel) unwinds like an exception: every `finally` stops the
    # process group of the run it started.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    sizes = QUICK if args.quick else FULL
    if args.days:
        sizes = replace(sizes, days=args.days)
    if args.rounds:
        sizes = replace(sizes, backfill_rounds=args.rounds)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}: expected some of {', '.join(SECTIONS)}")

    if sizes.smoke:
        # Inherited by every worker (`pipeline_env` keeps it): see `Sizes.smoke`.
        os.environ[CLASSIC_ON_SERVER] = "1"

    from regional_etl.contract import REGIONS
    from regional_etl.fx.server import FXServer
    from regional_etl.partitions import date_range
    from regional_etl.spark import server as spark_server

    started_at = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="regional-etl-bench-", dir=args.work))
    results: dict[str, Any] = {
        "mode": sizes.name,
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": machine(),
        "sizes": asdict(sizes),
        "sections": sections,
        "work": str(work),
    }
    dates = date_range(sizes.start, end_date(sizes))

    def say(line: str) -> None:
        # One write per line: the smoke run's lanes say things at the same moment.
        sys.stdout.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
        sys.stdout.flush()

    if "first_click" in sections and not sizes.smoke:
        # First: its own Spark server starts cold, with no other section's work beside it. Not
        # in a smoke run: two clicks through `dagster dev` take minutes.
        say("first click: dagster dev, Chromium, one partition on a new server, then a warm one")
        results["first_click"] = first_click.measure(work / "first-click", say=say)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "click.json").write_text(json.dumps(results["first_click"], indent=2))

    # A smoke run's sections beside the backfill and scaling sections (this thread): (u) in a
    # thread stopped with the benchmark, (a) in another, the gate then the load in a third, then
    # the references (r) and (d) in whichever is free first.
    beside = ThreadPoolExecutor(max_workers=3, thread_name_prefix="beside")
    stop_beside = threading.Event()
    server_up = threading.Event()
    was_running = False
    server: spark_server.ServerState | None = None
    try:
        # One FX service for every process.
        with FXServer() as fx:
            landing = work / "landing-1x"
            say(f"generating {sizes.days} days x {len(REGIONS)} regions x {sizes.rows} rows")
            results["input"] = generate(landing, sizes, sizes.rows)

            def ui_run(n: int) -> dict[str, Any]:
                return run_ui_backfill(
                    work,
                    f"u-r{n}",
                    landing,
                    sizes.start,
                    end_date(sizes),
                    fx.url,
                    max(1, sizes.rows // 2),
                    stop=stop_beside,
                    smoke=sizes.smoke,
                    launch_after=server_up,
                )

            first_u: Future[dict[str, Any]] | None = None
            if sizes.smoke and "ui_backfill" in sections:
                # First of all: `dagster dev` starts while the Spark server does, and its
                # backfill is launched once the server is up.
                say(
                    f"(u) asset backfill of {', '.join(SMOKE_ASSETS)} launched over the "
                    "webserver, beside the other sections"
                )
                first_u = beside.submit(ui_run, 0)

            # Every Dagster run of the product is a Spark Connect client: warm the local server
            # first, so no timed run pays its start. It is shared: stopped at the end only if
            # this started it and nobody else is connected.
            was_running = spark_server.read_state() is not None
            warming = time.perf_counter()
            server = spark_server.ensure_running()
            server_up.set()
            results["spark_server"] = {
                "already_running": was_running,
                "ensure_running_s": round(time.perf_counter() - warming, 3),
                "at_start": spark_server.describe(server),
            }
            say(
                f"Spark Connect server {'already running' if was_running else 'started'} at "
                f"{server.url} (pid {server.jvm_pid}), warm before any timed run"
            )
            if not was_running and sizes.name == "full":
                # A JVM that has only started runs its first Spark and Delta code cold (about
                # twice as slow): whichever variant came first would pay for it. A 2-day
                # backfill, not timed, warms the server's JIT for all of them.
                say("warming the new server with an untimed 2-day backfill")
                warm = replace(sizes, days=2, rows=2_000)
                warm_landing = work / "landing-warm"
                generate(warm_landing, warm, warm.rows)
                run_backfill_b(work, "warm", warm_landing, warm, warm.rows, fx.url, server.jvm_pid)
                results["spark_server"]["warmed_s"] = round(time.perf_counter() - warming, 3)

            def per_partition_section() -> None:
                if "per_partition" in sections:
                    sample_dates = dates[: sizes.per_partition_dates]
                    sample_regions = list(REGIONS[: sizes.per_partition_regions])
                    say(
                        f"(a) one process per partition, classic and Connect alternating: "
                        f"{len(sample_dates)} date(s) x {len(sample_regions)} region(s) sampled; "
                        f"Connect server warm at {server.url} (pid {server.jvm_pid})"
                    )
                    envs = {
                        path: pipeline_env(
                            dagster_home(work / f"home-a-{path}"),
                            landing,
                            work / f"warehouse-a-{path}",
                            fx.url,
                            sizes.min_rows,
                        )
                        for path in per_partition.LOCATIONS
                    }
                    logs = work / "logs" / "a"
                    pp = per_partition.measure(
                        dates,
                        list(REGIONS),
                        sample_dates,
                        sample_regions,
                        envs,
                        logs,
                        server.jvm_pid,
                        say,
                    )
                    say(f"{sizes.concurrent_runs} concurrent regional runs on the Connect path")
                    pp["concurrent"] = per_partition.concurrent(
                        sample_dates[0],
                        list(REGIONS[: sizes.concurrent_runs]),
                        envs["connect"],
                        logs / "concurrent",
                        server.jvm_pid,
                    )
                    if "backfill" not in sections:
                        # The per-partition total is judged against a range backfill of this run.
                        say("(b) run_backfill, to compare the per-partition runs with")
                        pp["b"] = run_backfill_b(
                            work, "b-pp", landing, sizes, sizes.rows, fx.url, server.jvm_pid
                        )
                    pp["tables"] = {
                        t: delta_files(work / "warehouse-a-connect" / t) for t in TABLES
                    }
                    results["per_partition"] = pp

            def gate_section() -> None:
                if "gate" in sections:
                    say(f"quality gate on {sizes.gate_rows} rows")
                    results["gate"] = run_gate(work, sizes, fx.url)

            def load_section() -> None:
                if "load" in sections:
                    say("code location load (dagster definitions validate)")
                    env = pipeline_env(dagster_home(work / "home-load"), landing, work, fx.url, 1)
                    # A smoke run times nothing: no warm-up for the one timing it takes.
                    results["load"] = load.measure(
                        sizes.load_repeats, env, work / "logs", warm_up=not sizes.smoke
                    )

            def references(n: int) -> dict[str, Any]:
                """One turn of the fixed references, each checked against the oracle."""
                one: dict[str, Any] = {}
                say(f"round {n + 1}: (r) reference PySpark script")
                one["r"] = run_reference(work, f"r-1x-r{n}", "r", landing, sizes, fx.url)
                say(f"(r) {one['r']['wall_s']:.1f}s, output as expected; (d) DuckDB reference")
                one["d"] = run_reference(work, f"d-1x-r{n}", "d", landing, sizes, fx.url)
                say(f"(d) {one['d']['wall_s']:.1f}s, output as expected")
                return one

            # A smoke run profiles the backfill section's (b) instead of running it again.
            profile_in_b = sizes.smoke and {"profile", "backfill"} <= set(sections)

            def profile_section() -> None:
                if "profile" in sections and not profile_in_b:
                    say("step profile: (b) run_backfill with every Spark and Delta call timed")
                    results["profile"] = step_profile.run_profile(
                        work,
                        landing,
                        sizes.start,
                        end_date(sizes),
                        sizes.rows,
                        fx.url,
                        server.jvm_pid,
                    )

            # A smoke run: (a), the gate, the load, the step profile and the references beside
            # (b), (c), (c') and scaling (and (u)); they write to warehouses and instances of
            # their own.
            lanes = (per_partition_section, gate_section, load_section, profile_section)
            side = [beside.submit(f) for f in lanes] if sizes.smoke else []
            smoke_references = (
                beside.submit(references, 0) if sizes.smoke and "backfill" in sections else None
            )
            if not sizes.smoke:
                load_section()

            if "backfill" in sections:
                # Other people's jobs come and go on a shared machine and only ever add time:
                # (b), the references (r) and (d), (c) and (c') take turns, and each variant's
                # fastest round counts.
                rounds: list[dict[str, Any]] = []
                for n in range(sizes.backfill_rounds):
                    one: dict[str, Any] = {}
                    say(f"round {n + 1}: (b) run_backfill, one process")
                    one["b"] = run_backfill_b(
                        work,
                        f"b-1x-r{n}",
                        landing,
                        sizes,
                        sizes.rows,
                        fx.url,
                        server.jvm_pid,
                        **({"worker": step_profile.WORKER} if profile_in_b else {}),
                    )
                    say(f"(b) {one['b']['wall_s']:.1f}s")
                    if smoke_references is None:
                        one.update(references(n))
                    say("(c) bare PySpark")
                    one["c"] = run_bare_c(work, f"c-1x-r{n}", landing, sizes, fx.url, False)
                    say(f"(c) {one['c']['wall_s']:.1f}s; (c') bare PySpark with the proposals")
                    one["c_optimized"] = run_bare_c(
                        work, f"c-opt-1x-r{n}", landing, sizes, fx.url, True
                    )
                    say(f"(c') {one['c_optimized']['wall_s']:.1f}s")
                    if smoke_references is not None:
                        one.update(smoke_references.result())
                    rounds.append(one)
                    for name in ("b", "r", "d", "c", "c-opt"):  # ~0.5 GB each in full mode
                        shutil.rmtree(work / f"warehouse-{name}-1x-r{n}", ignore_errors=True)
                results["backfill"] = best_rounds(rounds)
                if profile_in_b:
                    results["profile"] = step_profile.of_run(
                        results["backfill"]["b"], sizes.start, end_date(sizes), sizes.rows
                    )

            def ui_section() -> None:
                # The UI's path and the CLI's, side by side, each on its own instance and
                # warehouse, with the bare script as the floor: (u), (b), (c), twice, in turns.
                ui_rounds: list[dict[str, Any]] = []
                for n in range(sizes.backfill_rounds):
                    one: dict[str, Any] = {}
                    if first_u is not None and n == 0:
                        say("(u) waiting for the asset backfill started beside the sections")
                        one["u"] = first_u.result()
                    else:
                        say(f"round {n + 1}: (u) asset backfill launched over the webserver")
                        one["u"] = ui_run(n)
                    say(f"(u) {one['u']['wall_s']:.1f}s in {one['u']['runs']} runs; (b) CLI")
                    if sizes.smoke and "backfill" in results:
                        # A smoke run only checks that every path runs: the backfill section's
                        # (b) and (c) of this invocation stand in.
                        one["b"], one["c"] = results["backfill"]["b"], results["backfill"]["c"]
                        ui_rounds.append(one)
                        break
                    one["b"] = run_backfill_b(
                        work, f"ub-r{n}", landing, sizes, sizes.rows, fx.url, server.jvm_pid
                    )
                    say(f"(b) {one['b']['wall_s']:.1f}s; (c) bare PySpark")
                    one["c"] = run_bare_c(work, f"uc-r{n}", landing, sizes, fx.url, False)
                    say(f"(c) {one['c']['wall_s']:.1f}s")
                    ui_rounds.append(one)
                    for name in ("u", "ub", "uc"):
                        shutil.rmtree(work / f"warehouse-{name}-r{n}", ignore_errors=True)
                best = {
                    k: min((r[k] for r in ui_rounds), key=lambda m: m["wall_s"])
                    for k in ("u", "b", "c")
                }
                best["rounds_wall_s"] = {
                    k: [r[k]["wall_s"] for r in ui_rounds] for k in ("u", "b", "c")
                }
                results["ui_backfill"] = best

            if "ui_backfill" in sections and not sizes.smoke:
                ui_section()

            if not sizes.smoke:
                per_partition_section()
                gate_section()
                profile_section()

            if "scaling" in sections:
                scaling: list[dict[str, Any]] = []
                for factor in sizes.scale_factors:
                    rows = sizes.rows * factor
                    if factor == 1 and "backfill" in results:
                        run, lines = results["backfill"]["b"], results["input"]["lines"]
                    else:
                        root = work / f"landing-{factor}x"
                        say(f"scaling {factor}x: generating {rows} rows per partition")
                        lines = generate(root, sizes, rows)["lines"]
                        say(f"scaling {factor}x: (b) run_backfill")
                        run = run_backfill_b(
                            work, f"b-{factor}x", root, sizes, rows, fx.url, server.jvm_pid
                        )
                        # Disk: the 4x input of the full mode is ~1.7 GB.
                        shutil.rmtree(root, ignore_errors=True)
                        shutil.rmtree(work / f"warehouse-b-{factor}x", ignore_errors=True)
                    scaling.append(
                        {"factor": factor, "rows_per_partition": rows, "lines": lines, "b": run}
                    )
                results["scaling"] = scaling

            for section in side:
                section.result()
            if "ui_backfill" in sections and sizes.smoke:
                ui_section()  # (u) started first, beside the others: collected last
    finally:
        # On any way out, (u) beside stops at its next poll and ends its `dagster dev`.
        stop_beside.set()
        beside.shutdown(wait=True, cancel_futures=True)
        results["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        after = spark_server.read_state()
        if server is not None:
            results["spark_server"]["same_server_at_end"] = bool(
                after and after.server_id == server.server_id
            )
        if not was_running and after and after.connected_clients() == 0:
            spark_server.stop()
            results.setdefault("spark_server", {})["stopped_at_end"] = True
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        # The raw numbers first: an hour of measurements must survive a bug in the summary.
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{sizes.name}-{started_at:%Y%m%dT%H%M%SZ}.json"
        path.write_text(json.dumps(results, indent=2, default=str))

    results["summary"] = summarize(results)
    path.write_text(json.dumps(results, indent=2, default=str))
    print(format_report(results))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
