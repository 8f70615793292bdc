"""Step profile of the range backfill (issue 27): where row (b)'s time goes, run by run.

The worker (`python -m benchmarks.step_profile`, the arguments of `backfill_dagster`) runs the
(b) worker itself, `backfill_dagster.main`, in this process, after wrapping with timers:

- every Spark Connect round trip of the client (`SparkConnectClient`: executions of a plan or a
  command, analyze and config calls, the session release), by the kind of execution and by the
  regional_etl function that issued it;
- the Delta helpers of `regional_etl.io.delta` and `catalog.table_rows` (writes, and the log
  reads around them: table creation, version pins, commit lookups, table row counts);
- the Python-side reads of the landing files (`ready_drop`, `scan_drop`, `count_lines`) and the
  FX fetches;
- each Dagster run (`JobDefinition.execute_in_process`, how `regional_etl.backfill` executes a
  run without a daemon): everything above is attributed to the run executing at the time, the
  rest to "outside runs".

Only this process is instrumented: the product has no profiling code, and these wrappers reach
into pyspark's private client methods, which a pyspark upgrade may rename (the profile then
fails loudly, never estimates). After the backfill, the Delta commits are counted from each
table's history: by the run id every commit carries in `userMetadata`, and the table creations
(untagged) by the run whose time window holds their timestamp.

`format_section` prints it for `benchmarks.report`; `daemon_waits` reads the UI path's run
timeline (`ui_backfill`) for the ticks the daemon made it wait.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import backfill_dagster
from benchmarks.common import PROJECT, dagster_home, pipeline_env, run_measured, worker_argv

# Where a wrapped function is counted. Categories nest (a write includes its log reads): each is
# timed at its outermost call only, so a category never counts a second more than the wall time.
DELTA_LOG_READ = "delta_log_read"
DELTA_WRITE = "delta_write"
LANDING_PYTHON = "landing_python"
FX = "fx"
WRAPPED: dict[str, tuple[str, ...]] = {
    "regional_etl.io.delta": ("ensure_table", "current_version", "commit_of"),
    "regional_etl.catalog": ("table_rows",),
    "regional_etl.io.landing": ("ready_drop", "scan_drop", "count_lines"),
}
CATEGORY = {
    "ensure_table": DELTA_LOG_READ,
    "current_version": DELTA_LOG_READ,
    "commit_of": DELTA_LOG_READ,
    "table_rows": DELTA_LOG_READ,
    "replace_partitions": DELTA_WRITE,
    "ready_drop": LANDING_PYTHON,
    "scan_drop": LANDING_PYTHON,
    "count_lines": LANDING_PYTHON,
    "get_usd_rates": FX,
    "latest_rate_date": FX,
}
WRITE_KINDS = ("write_operation", "write_operation_v2")
OUTSIDE = "outside runs"
WORKER = "benchmarks.step_profile"
PROFILE_KEY = "step_profile"  # the profile in the worker's result, beside (b)'s own numbers


def _add(into: dict[str, list[float]], key: str, seconds: float) -> None:
    n_s = into.setdefault(key, [0, 0.0])
    n_s[0] += 1
    n_s[1] += seconds


@dataclass
class Tally:
    """What one Dagster run (or the time outside runs) spent, counted from real calls."""

    label: str
    assets: list[str] = field(default_factory=list)
    range: str = ""
    partitions: int = 0  # published by the run (its materializations)
    run_id: str | None = None
    run_s: float = 0.0  # as the instance records the run, and its steps
    steps_s: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0  # epoch seconds, to place the untagged Delta commits
    ended_at: float = 0.0
    wall_s: float = 0.0
    # [count, seconds] by key
    executions: dict[str, list[float]] = field(default_factory=dict)  # by kind of plan
    rpcs: dict[str, list[float]] = field(default_factory=dict)  # analyze, config, release
    spark_by_caller: dict[str, list[float]] = field(default_factory=dict)
    calls: dict[str, list[float]] = field(default_factory=dict)  # wrapped functions
    categories: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def rounded(d: dict[str, list[float]]) -> dict[str, list[float]]:
            return {k: [int(n), round(s, 3)] for k, (n, s) in sorted(d.items())}

        return {
            "label": self.label,
            "assets": self.assets,
            "range": self.range,
            "partitions": self.partitions,
            "run_id": self.run_id,
            "run_s": round(self.run_s, 3),
            "steps_s": {k: round(v, 3) for k, v in self.steps_s.items()},
            "started_at": round(self.started_at, 3),
            "ended_at": round(self.ended_at, 3),
            "wall_s": round(self.wall_s, 3),
            "executions": rounded(self.executions),
            "rpcs": rounded(self.rpcs),
            "spark_by_caller": rounded(self.spark_by_caller),
            "calls": rounded(self.calls),
            "categories": rounded(self.categories),
        }


class Profiler:
    """The tallies of this process: one per run, in order, and one for outside runs."""

    def __init__(self) -> None:
        self.outside = Tally(OUTSIDE)
        self.runs: list[Tally] = []
        self.current = self.outside
        self.active: dict[str, int] = {}  # category -> depth of the calls in progress
        self.lock = threading.Lock()
        self.enabled = True

    def spark(self, table: str, key: str, seconds: float) -> None:
        if not self.enabled:
            return
        caller = _caller()
        with self.lock:
            _add(getattr(self.current, table), key, seconds)
            _add(self.current.spark_by_caller, caller, seconds)

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        category = CATEGORY[name]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            outermost = self.active.get(category, 0) == 0
            self.active[category] = self.active.get(category, 0) + 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - started
                self.active[category] -= 1
                if self.enabled:
                    with self.lock:
                        _add(self.current.calls, name, seconds)
                        if outermost:
                            _add(self.current.categories, category, seconds)

        return wrapper


def _caller() -> str:
    """The innermost regional_etl function on the stack: who asked Spark."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("regional_etl") and not module.startswith("regional_etl.spark"):
            return f"{module.removeprefix('regional_etl.')}.{frame.f_code.co_name}"
        frame = frame.f_back
    return "(not regional_etl)"


def _plan_kind(req: Any) -> str:
    op = req.plan.WhichOneof("op_type")
    if op == "command":
        return str(req.plan.command.WhichOneof("command_type"))
    return "query" if op == "root" else str(op)


def install(profiler: Profiler) -> None:
    """Wrap the Spark Connect client, the Delta and landing helpers, the FX resource and the
    run execution of this process with `profiler`'s timers."""
    from dagster import JobDefinition
    from pyspark.sql.connect.client.core import SparkConnectClient

    import regional_etl.definitions  # noqa: F401  (every module that binds a wrapped name)
    from regional_etl.backfill.in_process import RANGE_END_TAG, RANGE_START_TAG
    from regional_etl.io import delta
    from regional_etl.resources.fx import FXRatesResource

    execute_stream = SparkConnectClient._execute_and_fetch_as_iterator

    def execute_and_fetch(self: Any, req: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        started = time.perf_counter()
        try:
            yield from execute_stream(self, req, *args, **kwargs)
        finally:
            profiler.spark("executions", _plan_kind(req), time.perf_counter() - started)

    SparkConnectClient._execute_and_fetch_as_iterator = execute_and_fetch  # type: ignore[method-assign]
    execute_dropping = SparkConnectClient._execute

    def execute(self: Any, req: Any) -> None:
        started = time.perf_counter()
        try:
            execute_dropping(self, req)
        finally:
            profiler.spark("executions", _plan_kind(req), time.perf_counter() - started)

    SparkConnectClient._execute = execute  # type: ignore[method-assign]
    for name in ("_analyze", "config", "release_session"):
        setattr(SparkConnectClient, name, _rpc(profiler, name, getattr(SparkConnectClient, name)))

    originals: dict[int, Callable[..., Any]] = {}
    for module_name, names in WRAPPED.items():
        module = sys.modules[module_name]
        for name in names:
            fn = getattr(module, name)
            originals[id(fn)] = profiler.timed(name, fn)
    originals[id(delta.replace_partitions)] = profiler.timed(
        "replace_partitions", delta.replace_partitions
    )
    # Every module that imported a wrapped function by name holds its own binding.
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith(("regional_etl", "benchmarks")):
            continue
        for attr, value in list(vars(module).items()):
            if inspect.isfunction(value) and id(value) in originals:
                setattr(module, attr, originals[id(value)])
    for name in ("get_usd_rates", "latest_rate_date"):
        setattr(FXRatesResource, name, profiler.timed(name, getattr(FXRatesResource, name)))

    run_job = JobDefinition.execute_in_process

    def execute_in_process(self: Any, *args: Any, **kwargs: Any) -> Any:
        tags = kwargs.get("tags") or {}
        tally = Tally(
            label="",
            assets=sorted(k.to_user_string() for k in kwargs.get("asset_selection") or []),
            range=" .. ".join(tags[k] for k in (RANGE_START_TAG, RANGE_END_TAG) if k in tags),
        )
        with profiler.lock:
            profiler.runs.append(tally)
            profiler.current = tally
        tally.started_at = time.time()
        started = time.perf_counter()
        try:
            result = run_job(self, *args, **kwargs)
        finally:
            tally.wall_s = time.perf_counter() - started
            tally.ended_at = time.time()
            with profiler.lock:
                profiler.current = profiler.outside
        tally.run_id = result.run_id
        published: dict[str, set[str]] = {}
        for event in result.get_asset_materialization_events():
            key = event.asset_key.to_user_string() if event.asset_key else ""
            published.setdefault(key, set()).add(str(event.partition))
        tally.partitions = max((len(p) for p in published.values()), default=0)
        return result

    JobDefinition.execute_in_process = execute_in_process  # type: ignore[method-assign]


def _rpc(profiler: Profiler, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(self, *args, **kwargs)
        finally:
            seconds = time.perf_counter() - started
            method = args[0] if args else kwargs.get("method", "")
            profiler.spark("rpcs", f"analyze {method}" if name == "_analyze" else name, seconds)

    return wrapper


def delta_commits(warehouse: str, runs: list[Tally]) -> dict[str, Any]:
    """Every commit of every table of the warehouse, by run: the run id in `userMetadata`, or
    for an untagged commit (a table creation) the run whose time window holds its timestamp."""
    from regional_etl.contract import Table
    from regional_etl.io.delta import history
    from regional_etl.io.warehouse import WarehousePaths
    from regional_etl.spark.resource import SparkResource

    paths = WarehousePaths(Path(), warehouse)  # no landing: only the tables are read
    spark = SparkResource().spark_session
    by_run: dict[str, dict[str, dict[str, int]]] = {}
    try:
        for table in Table:
            path = paths.table(table)
            if not (Path(path) / "_delta_log").is_dir():
                continue
            commits = (
                history(spark, path)
                .selectExpr("version", "unix_millis(timestamp) AS ms", "userMetadata", "operation")
                .collect()
            )
            for c in commits:
                owner = next((r for r in runs if r.run_id and r.run_id == c["userMetadata"]), None)
                if owner is None:
                    at = c["ms"] / 1000
                    # Commit timestamps are the log file's time, on this machine's clock.
                    owner = next((r for r in runs if r.started_at <= at <= r.ended_at), None)
                key = owner.run_id if owner and owner.run_id else OUTSIDE
                ops = by_run.setdefault(key, {}).setdefault(table.value, {})
                ops[c["operation"]] = ops.get(c["operation"], 0) + 1
    finally:
        spark.stop()
    return by_run


def _run_records(runs: list[Tally]) -> None:
    """Each run's time as the instance recorded it, and its steps'."""
    from dagster import DagsterInstance

    instance = DagsterInstance.get()
    for tally in runs:
        if tally.run_id is None:
            continue
        stats = instance.get_run_stats(tally.run_id)
        tally.run_s = (stats.end_time or 0) - (stats.start_time or 0)
        tally.steps_s = {
            s.step_key: (s.end_time or 0) - (s.start_time or 0)
            for s in instance.get_run_step_stats(tally.run_id)
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warehouse", required=True)
    known, _ = parser.parse_known_args(argv)

    from benchmarks import common

    # (b)'s own result line is kept, under the profile's: this worker stands in for (b).
    emit, b_result = common.emit, {}
    common.emit = b_result.update  # type: ignore[assignment]
    profiler = Profiler()
    install(profiler)
    started = time.perf_counter()
    installed_s = started - backfill_dagster.T0
    returncode = backfill_dagster.main(argv)
    finished = time.perf_counter()
    profiler.enabled = False
    _run_records(profiler.runs)
    commits = delta_commits(known.warehouse, profiler.runs)
    b_result[PROFILE_KEY] = {
        "ok": returncode == 0,
        "imports_and_instrumentation_s": round(installed_s, 3),
        "backfill_worker_s": round(finished - started, 3),
        # The profile's own reads after the backfill: not part of what (b) pays.
        "profiler_tail_s": round(time.perf_counter() - finished, 3),
        "runs": [t.to_json() for t in profiler.runs],
        "outside_runs": profiler.outside.to_json(),
        "commits_by_run": commits,
    }
    emit(b_result)
    return returncode


# ---- the printed section ------------------------------------------------------------------

HEADING = "6. Step profile of (b)"


def _n(d: dict[str, list[float]], keys: tuple[str, ...] | None = None) -> tuple[int, float]:
    picked = [v for k, v in d.items() if keys is None or k in keys]
    return int(sum(n for n, _ in picked)), sum(s for _, s in picked)


def row(tally: dict[str, Any], commits: dict[str, dict[str, dict[str, int]]]) -> dict[str, Any]:
    """One line of the profile, from a run's (or outside runs') raw tally."""
    actions, action_s = _n(tally["executions"])
    rpcs, rpc_s = _n(tally["rpcs"])
    spark_s = action_s + rpc_s
    cats = tally["categories"]
    key = tally["run_id"] or OUTSIDE
    own = commits.get(key, {}) if key != OUTSIDE or tally["label"] == OUTSIDE else {}
    return {
        "run": tally["label"]
        if tally["label"] == OUTSIDE
        else "+".join(a.split("/")[-1] for a in tally["assets"]),
        "range": tally["range"],
        "partitions": tally.get("partitions", 0),
        "wall_s": tally["wall_s"],
        "run_s": tally.get("run_s", 0.0),
        "steps_s": sum(tally.get("steps_s", {}).values()),
        "spark_actions": actions,
        "other_rpcs": rpcs,
        "spark_s": round(spark_s, 3),
        "delta_writes": int(tally["calls"].get("replace_partitions", [0, 0])[0]),
        "write_s": round(_n(tally["executions"], WRITE_KINDS)[1], 3),
        "commits": sum(n for ops in own.values() for n in ops.values()),
        "log_reads": int(cats.get(DELTA_LOG_READ, [0, 0])[0]),
        "log_read_s": round(cats.get(DELTA_LOG_READ, [0, 0.0])[1], 3),
        "landing_python_s": round(cats.get(LANDING_PYTHON, [0, 0.0])[1], 3),
        "fx_s": round(cats.get(FX, [0, 0.0])[1], 3),
        "outside_spark_s": round(tally["wall_s"] - spark_s, 3),
    }


def summarize(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile's rows and totals, from the worker's raw tallies."""
    result = profile["result"][PROFILE_KEY]
    commits = result["commits_by_run"]
    rows = [row(t, commits) for t in result["runs"]]
    outside = row(result["outside_runs"], commits)
    # The process as (b) would run it: without the profile's own reads at its end.
    wall = profile["wall_s"] - result.get("profiler_tail_s", 0.0)
    outside["wall_s"] = round(wall - sum(r["wall_s"] for r in rows), 3)
    spark_outside = outside["spark_s"]
    outside["outside_spark_s"] = round(outside["wall_s"] - spark_outside, 3)
    total: dict[str, Any] = {"run": "total", "range": ""}
    for k in rows[0] if rows else []:
        if k not in total and isinstance(rows[0][k], int | float):
            total[k] = round(sum(r[k] for r in [*rows, outside]), 3)
    total["partitions"] = 0  # runs of different levels publish the same partitions
    callers: dict[str, list[float]] = {}
    for t in [*result["runs"], result["outside_runs"]]:
        for caller, (n, sec) in t["spark_by_caller"].items():
            c = callers.setdefault(caller, [0, 0.0])
            c[0] += n
            c[1] += sec
    top = sorted(callers.items(), key=lambda kv: -kv[1][1])
    return {
        "rows": rows,
        "outside": outside,
        "total": total,
        "spark_by_caller": {k: [int(n), round(s, 3)] for k, (n, s) in top},
    }


def daemon_waits(u: dict[str, Any]) -> dict[str, Any] | None:
    """The UI path's time with no backfill run in flight: from the click to the first run, the
    gaps between a level's last run and the next level's first, and from the last run to the
    backfill's end. Each gap ends at a daemon iteration (a tick) that launched runs or marked
    the backfill done. None when (u) has no run timeline."""
    timeline = u.get("run_timeline")
    if not timeline or u.get("clicked_at") is None:
        return None
    clicked, ended = u["clicked_at"], u["ended_at"]
    spans = sorted((r["created"], r["ended"] or ended) for r in timeline)
    waits: list[float] = []
    free_from = clicked
    for created, end in spans:
        if created > free_from:
            waits.append(created - free_from)
        free_from = max(free_from, end)
    if ended > free_from:
        waits.append(ended - free_from)
    return {
        "wall_s": round(ended - clicked, 1),
        "ticks_waited": len(waits),
        "waited_s": round(sum(waits), 1),
        "waits_s": [round(w, 1) for w in waits],
        "runs": len(timeline),
    }


def format_section(results: dict[str, Any]) -> list[str]:
    """The profile's printed lines (none when the section did not run)."""
    from benchmarks.report import _s, _table
    from regional_etl.partitions import date_range

    profile = results.get("profile")
    if not profile or PROFILE_KEY not in profile.get("result", {}):
        return []
    p = summarize(profile)
    header = [
        "run",
        "partitions",
        "wall s",
        "Spark actions",
        "other RPCs",
        "Spark wait s",
        "Delta writes",
        "commits",
        "log reads",
        "log read s",
        "write s",
        "outside Spark s",
        "landing in Python s",
    ]

    def line(r: dict[str, Any], name: str) -> list[str]:
        return [
            name,
            str(r.get("partitions") or ""),
            _s(r["wall_s"]),
            str(r["spark_actions"]),
            str(r["other_rpcs"]),
            _s(r["spark_s"]),
            str(r["delta_writes"]),
            str(r["commits"]),
            str(r["log_reads"]),
            _s(r["log_read_s"]),
            _s(r["write_s"]),
            _s(r["outside_spark_s"]),
            _s(r["landing_python_s"]),
        ]

    rows = [line(r, f"{r['run']} {_short(r['range'])}".strip()) for r in p["rows"]]
    rows.append(line(p["outside"], "outside runs (start, imports, between runs)"))
    rows.append(line(p["total"], "total"))
    days = len(date_range(profile["start"], profile["end"]))
    out = [
        "",
        f"{HEADING}: run_backfill in one process, every Spark Connect call, Delta helper and "
        f"landing read timed ({profile['start']}..{profile['end']}, {days} days x 4 regions x "
        f"{profile['rows_per_partition']:,} rows)",
        _table(header, rows),
        *(
            ["(smoke run: the backfill section's (b) itself, instrumented, not a second run)"]
            if results["sizes"].get("smoke") and "backfill" in results
            else []
        ),
        "Spark actions: Connect plan executions (queries, writes, SQL commands); other RPCs: "
        "analyze (schema, persist), config, session release. Delta: writes = "
        "replace_partitions calls, "
        "commits from the tables' histories (run id in userMetadata; table creations by time), "
        "log reads = table creation checks, version pins, commit lookups and table row counts; "
        "write s = the write executions (the write job and its commit). Log reads and writes "
        "are part of the Spark wait; outside Spark = wall - Spark wait.",
    ]
    fx = [r for r in p["rows"] if r["run"] == "fx_rates"]
    for r in fx:
        out.append(f"FX run: {_s(r['wall_s'])} s, of which FX fetches {_s(r['fx_s'], 2)} s")
    dagster = sum(r["run_s"] - r["steps_s"] for r in p["rows"])
    out.append(
        f"in the runs: Dagster outside steps {_s(dagster)} s; landing files read in Python "
        f"(ready_drop, scan_drop, count_lines) {_s(p['total']['landing_python_s'])} s"
    )
    top = list(p["spark_by_caller"].items())[:6]
    out.append(
        "Spark wait by caller, s: "
        + ", ".join(f"{caller} {sec:.1f} ({n})" for caller, (n, sec) in top)
    )
    ui = results.get("ui_backfill")
    waits = daemon_waits(ui["u"]) if ui else None
    if waits:
        out.append(
            f"(u) daemon ticks waited (this invocation's UI backfill): {waits['ticks_waited']} "
            f"waits with no run in flight, {_s(waits['waited_s'])} s of {_s(waits['wall_s'])} s "
            f"({', '.join(f'{w:.1f}' for w in waits['waits_s'])} s; {waits['runs']} runs)"
        )
    return out


def _short(span: str) -> str:
    """'2024-03-01|eu-west .. 2024-03-05|eu-west' as '03-01..03-05 eu-west'."""
    parts = [p.strip() for p in span.split("..")]
    if len(parts) != 2:
        return span
    (d0, *r0), (d1, *r1) = (p.split("|") for p in parts)
    dates = d0[5:] if d0 == d1 else f"{d0[5:]}..{d1[5:]}"
    regions = "" if not r0 else (r0[0] if r0 == r1 else f"{r0[0]}..{r1[0]}")
    return f"{dates} {regions}".strip()


# ---- entry command side -------------------------------------------------------------------


def run_profile(
    work: Path,
    landing: Path,
    start: str,
    end: str,
    rows: int,
    fx_url: str,
    server_pid: int,
) -> dict[str, Any]:
    """The profile worker in a fresh process on a fresh instance and warehouse, as (b) runs."""
    home = dagster_home(work / "home-profile")
    warehouse = work / "warehouse-profile"
    min_rows = max(1, rows // 2)
    env = pipeline_env(home, landing, warehouse, fx_url, min_rows)
    argv = worker_argv(
        WORKER, landing, warehouse, start, end, "--fx-url", fx_url, "--min-rows", str(min_rows)
    )
    measured = run_measured(
        argv, env, work / "logs" / "profile.log", cwd=PROJECT, shared=(server_pid,)
    )
    return of_run(measured.to_json(), start, end, rows)


def of_run(run: dict[str, Any], start: str, end: str, rows: int) -> dict[str, Any]:
    """The profile section's entry of a measured run of the worker: (b)'s, in a smoke run."""
    return {**run, "start": start, "end": end, "rows_per_partition": rows}


if __name__ == "__main__":
    raise SystemExit(main())
