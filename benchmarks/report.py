"""The numbers that matter, from the raw results: ratios, targets, and the printed table."""

from __future__ import annotations

from typing import Any

from benchmarks import step_profile

# The targets. They are reported, never asserted: this machine is shared and noisy.
TARGETS = {
    # Issue 11: per-partition runs on the product's Spark Connect path over the backfill's days
    # cost at most 3x one range backfill; a regional run is at least 5x faster than on the
    # classic per-run JVM; 4 concurrent runs plus the server hold at most 3.5 GiB.
    "a_over_b_max": 3.0,
    "classic_over_connect_run_min": 5.0,
    "concurrent_memory_max_gib": 3.5,
    "b_over_c_max": 1.5,
    # Issue 27: the range backfill against the fixed references, a straightforward PySpark
    # script (r) and DuckDB (d) (benchmarks/reference_*.py).
    "b_over_r_max": 0.6,
    "b_over_d_max": 3.0,
    # Issue 12: the UI's asset backfill (webserver + daemon) against the CLI and the bare script.
    "u_over_b_max": 1.5,
    "u_over_c_max": 5.0,
    "gate_over_count_max": 1.3,
    "load_max_s": 3.0,
    "memory_max_gib": 4.0,
}


# The fixed references' rows: key in the results, label in the table.
REFERENCES = {
    "r": "(r) reference PySpark script (fixed)",
    "d": "(d) DuckDB reference (fixed)",
}


def _ratio(num: float | None, den: float | None) -> float | None:
    if not num or not den:
        return None
    return round(num / den, 2)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def _min_cpu(backfill: dict[str, Any] | None, variant: str) -> float | None:
    """A variant's least CPU time over its rounds (CPU, too, only gains from noise)."""
    if not backfill or variant not in backfill:  # results from before the references
        return None
    run = backfill[variant]
    return min(run.get("rounds_cpu_s") or [run["memory"]["cpu_s"]])


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Derived numbers (ratios, rows/s, targets met) for the JSON and the table."""
    lines = results.get("input", {}).get("lines", 0)
    summary: dict[str, Any] = {"lines": lines, "targets": TARGETS}
    backfill = results.get("backfill")
    a = results.get("per_partition")
    # (b) to judge (a) by: the backfill section's, or the one the per-partition section ran.
    b_run = backfill["b"] if backfill else (a or {}).get("b")
    paths = (a or {}).get("paths", {})
    if backfill or a:
        walls = {
            "a": paths["connect"]["extrapolated_wall_s"] if a else None,
            "a_classic": paths["classic"]["extrapolated_wall_s"] if a else None,
            "b": b_run["wall_s"] if b_run else None,
            "c": backfill["c"]["wall_s"] if backfill else None,
            "c_optimized": backfill["c_optimized"]["wall_s"] if backfill else None,
            **{k: (backfill or {}).get(k, {}).get("wall_s") for k in REFERENCES},
        }
        cpus = {
            "a": paths["connect"]["extrapolated_cpu_s"] if a else None,
            "a_classic": paths["classic"]["extrapolated_cpu_s"] if a else None,
            **{k: _min_cpu(backfill, k) for k in ("b", "c", "c_optimized", *REFERENCES)},
        }
        if cpus["b"] is None and b_run:
            cpus["b"] = b_run["memory"]["cpu_s"]
        summary["wall_s"] = walls
        summary["cpu_s"] = cpus
        summary["rows_per_s"] = {k: round(lines / v) if v else None for k, v in walls.items()}
        summary["a_over_b_cpu"] = _ratio(cpus["a"], cpus["b"])
        summary["b_over_c_cpu"] = _ratio(cpus["b"], cpus["c"])
        a_over_b = _ratio(walls["a"], walls["b"])
        b_over_c = _ratio(walls["b"], walls["c"])
        summary["a_over_b"] = a_over_b
        summary["b_over_c"] = b_over_c
        summary["c_over_c_optimized"] = _ratio(walls["c"], walls["c_optimized"])
        summary["a_classic_over_b"] = _ratio(walls["a_classic"], walls["b"])
        summary["a_over_b_met"] = None if a_over_b is None else a_over_b <= TARGETS["a_over_b_max"]
        summary["b_over_c_met"] = None if b_over_c is None else b_over_c <= TARGETS["b_over_c_max"]
        for ref in REFERENCES:
            ratio = _ratio(walls["b"], walls[ref])
            summary[f"b_over_{ref}"] = ratio
            summary[f"b_over_{ref}_cpu"] = _ratio(cpus["b"], cpus[ref])
            summary[f"b_over_{ref}_met"] = (
                None if ratio is None else ratio <= TARGETS[f"b_over_{ref}_max"]
            )
    if a:
        regional = {p: paths[p]["median_run_s"].get("regional_orders_job") for p in paths}
        summary["regional_run_median_s"] = regional
        summary["regional_runs_per_path"] = {p: len(paths[p]["regional_run_s"]) for p in paths}
        speedup = _ratio(regional.get("classic"), regional.get("connect"))
        summary["classic_over_connect_run"] = speedup
        summary["classic_over_connect_run_met"] = (
            None if speedup is None else speedup >= TARGETS["classic_over_connect_run_min"]
        )
        conc = a.get("concurrent")
        if conc:
            peak = conc["memory"]["total_mib"] / 1024
            summary["concurrent_peak_gib"] = round(peak, 2)
            summary["concurrent_jvms_seen"] = conc["memory"]["jvms_seen"]
            summary["concurrent_memory_met"] = (
                peak <= TARGETS["concurrent_memory_max_gib"]
                and conc["memory"]["jvms_seen"] <= 1
                and conc["ok"]
            )
    if backfill:
        b = backfill["b"]
        runs = b["result"].get("runs", [])
        summary["b_runs"] = len(runs)
        summary["b_dagster_overhead_s"] = round(sum(r["run_s"] - r["steps_s"] for r in runs), 2)
        summary["b_outside_runs_s"] = round(b["wall_s"] - sum(r["run_s"] for r in runs), 2)
        # Memory is not a timing: the worst round is the honest peak.
        peak = max(b.get("rounds_peak_total_mib") or [b["memory"]["total_mib"]]) / 1024
        summary["memory_peak_gib"] = round(peak, 2)
        summary["memory_met"] = peak <= TARGETS["memory_max_gib"]
    gate = results.get("gate")
    if gate and gate.get("result"):
        med = gate["result"]["median_s"]
        first = gate["result"]["first_action_median_s"]
        summary["gate_over_count"] = _ratio(med["gate_one_pass"], med["count"])
        summary["gate_over_column_scan"] = _ratio(med["gate_one_pass"], med["column_scan"])
        summary["scan_per_check_over_gate"] = _ratio(med["scan_per_check"], med["gate_one_pass"])
        summary["gate_first_action_over_count"] = _ratio(first["gate_one_pass"], first["count"])
        # The target compares the gate with a count() of the same partition as the pipeline
        # holds it: both the action that reads, classifies and converts the lines. On cached rows
        # count() reads no column at all (it adds up the cached batches' row counts), so that
        # ratio is reported to attribute the gate's cost, not judged.
        summary["gate_met"] = (summary["gate_first_action_over_count"] or 99) <= TARGETS[
            "gate_over_count_max"
        ]
    load = results.get("load")
    if load:
        best = load.get("validate_best_s", load["validate_wall_s"])
        summary["load_s"] = best
        summary["load_over_empty_location_s"] = round(
            best - load.get("validate_empty_location_best_s", load["validate_empty_location_s"]),
            3,
        )
        summary["load_met"] = best <= TARGETS["load_max_s"] and not load["jvm_started"]
    scaling = results.get("scaling")
    if scaling:
        points = [(s["lines"], s["b"]["wall_s"]) for s in scaling]
        summary["scaling"] = [
            {
                "factor": s["factor"],
                "lines": n,
                "wall_s": w,
                "cpu_s": s["b"]["memory"]["cpu_s"],
                "rows_per_s": round(n / w),
            }
            for s, (n, w) in zip(scaling, points, strict=True)
        ]
        if len(points) >= 2:
            (n0, w0), (n1, w1) = points[0], points[-1]
            # Linear fit through the end points: fixed cost + cost per million rows.
            per_million = (w1 - w0) / ((n1 - n0) / 1e6) if n1 != n0 else None
            summary["scaling_s_per_million_rows"] = round(per_million, 2) if per_million else None
            summary["scaling_fixed_s"] = (
                round(w0 - per_million * n0 / 1e6, 1) if per_million else None
            )
    ui = results.get("ui_backfill")
    if ui:
        u, b, c = (ui[k]["wall_s"] for k in ("u", "b", "c"))
        summary["ui_backfill"] = {
            "u_over_b": _ratio(u, b),
            "u_over_c": _ratio(u, c),
            "u_over_b_met": _ratio(u, b) is not None and u / b <= TARGETS["u_over_b_max"],
            "u_over_c_met": _ratio(u, c) is not None and u / c <= TARGETS["u_over_c_max"],
        }
    if step_profile.PROFILE_KEY in results.get("profile", {}).get("result", {}):
        summary["profile"] = step_profile.summarize(results["profile"])
    return summary


def _rounds(run: dict[str, Any]) -> str:
    walls = run.get("rounds_wall_s") or []
    if len(walls) < 2:
        return ""
    return f"; best of rounds {', '.join(f'{w:.0f}' for w in walls)} s"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    return "\n".join(out)


def _s(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def format_report(results: dict[str, Any]) -> str:
    """The printed table; benchmarks/README.md keeps a copy of the full mode's."""
    s = results["summary"]
    m = results["machine"]
    sizes = results["sizes"]
    out = [
        f"regional_etl benchmarks ({results['mode']} mode), {results['started_at']}",
        f"machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_gib']} GiB RAM, "
        f"load average at start {m['load_average_at_start']}",
        f"input: {sizes['days']} days x 4 regions x {sizes['rows']:,} rows per partition = "
        f"{s['lines']:,} landing lines",
    ]
    if sizes.get("smoke"):
        regions = sizes.get("bare_regions", 4)
        out.append(
            "SMOKE RUN: every section once at tiny sizes, to show that it runs; no number here "
            "means anything. The classic-path rows ((a0), (r), (c), (c'), the gate) ran on the "
            "warm Connect server instead of a JVM of their own; nothing was warmed up before its "
            "timing; (u) backfilled one layer of the graph (fx_rates); (u), (a), the gate then "
            "the code location load, then (r) and (d) ran beside (b), (c), (c') and scaling"
            + (f"; (c) and (c') processed {regions} of the 4 regions." if regions < 4 else ".")
        )
    backfill, a = results.get("backfill"), results.get("per_partition")
    if backfill or a:
        rows = []
        if a:
            for key, label in (
                ("a", "(a) one run per partition, Connect client each"),
                ("a_classic", "(a0) one run per partition, own JVM each"),
            ):
                path = a["paths"]["connect" if key == "a" else "classic"]
                rows.append(
                    [
                        label,
                        _s(s["wall_s"][key]),
                        _s(s["cpu_s"][key]),
                        _s(s["rows_per_s"][key], 0),
                        f"EXTRAPOLATED from {path['sampled_runs']} runs "
                        f"({a['sampled_partitions']} partitions) to "
                        f"{a['runs_in_full_backfill']} runs",
                    ]
                )
            if not backfill and a.get("b"):
                rows.append(
                    [
                        "(b) run_backfill: one process, range runs",
                        _s(s["wall_s"]["b"]),
                        _s(s["cpu_s"]["b"]),
                        _s(s["rows_per_s"]["b"], 0),
                        "Connect client; run by the per-partition section",
                    ]
                )
        if backfill:
            b = backfill["b"]
            rows += [
                [
                    "(b) run_backfill: one process, range runs",
                    _s(s["wall_s"]["b"]),
                    _s(s["cpu_s"]["b"]),
                    _s(s["rows_per_s"]["b"], 0),
                    f"{s['b_runs']} runs; Dagster overhead in runs {s['b_dagster_overhead_s']} s"
                    + _rounds(b),
                ],
                [
                    "(c) bare PySpark, same Spark jobs",
                    _s(s["wall_s"]["c"]),
                    _s(s["cpu_s"]["c"]),
                    _s(s["rows_per_s"]["c"], 0),
                    "no Dagster" + _rounds(backfill["c"]),
                ],
                [
                    "(c') bare PySpark + proposed optimisations",
                    _s(s["wall_s"]["c_optimized"]),
                    _s(s["cpu_s"]["c_optimized"]),
                    _s(s["rows_per_s"]["c_optimized"], 0),
                    f"c/c' = {_s(s['c_over_c_optimized'], 2)}" + _rounds(backfill["c_optimized"]),
                ],
            ]
            for ref, label in REFERENCES.items():
                if ref in backfill:
                    rows.append(
                        [
                            label,
                            _s(s["wall_s"][ref]),
                            _s(s["cpu_s"][ref]),
                            _s(s["rows_per_s"][ref], 0),
                            "output checked against the oracle" + _rounds(backfill[ref]),
                        ]
                    )
            if not b["result"].get("ok"):
                rows.append(["WARNING: (b) reported failures", "", "", "", b["log"]])
        header = ["variant", "wall s", "CPU s", "rows/s", "notes"]
        out += ["", "1. Backfill", _table(header, rows)]
        out.append(
            f"a/b = {_s(s['a_over_b'], 2)} (target <= 3: {_verdict(s['a_over_b_met'])}); "
            f"a0/b = {_s(s.get('a_classic_over_b'), 1)}; "
            f"b/c = {_s(s['b_over_c'], 2)} (target <= 1.5: {_verdict(s['b_over_c_met'])}); "
            f"in CPU time: a/b = {_s(s['a_over_b_cpu'], 2)}, b/c = {_s(s['b_over_c_cpu'], 2)}"
        )
        if backfill and "r" in backfill:
            out.append(
                "b/r = "
                f"{_s(s['b_over_r'], 2)} (target <= {TARGETS['b_over_r_max']}: "
                f"{_verdict(s['b_over_r_met'])}); b/d = {_s(s['b_over_d'], 2)} (target <= "
                f"{TARGETS['b_over_d_max']}: {_verdict(s['b_over_d_met'])}); in CPU time: "
                f"b/r = {_s(s['b_over_r_cpu'], 2)}, b/d = {_s(s['b_over_d_cpu'], 2)}"
            )
        if a:
            med = s["regional_run_median_s"]
            n = s["regional_runs_per_path"]
            out.append(
                f"per regional run, median (alternating, {n['classic']} classic, "
                f"{n['connect']} Connect): classic {_s(med['classic'], 2)} s, Connect "
                f"{_s(med['connect'], 2)} s, classic/Connect = "
                f"{_s(s['classic_over_connect_run'], 2)} (target >= 5: "
                f"{_verdict(s['classic_over_connect_run_met'])})"
            )
            for name, path in a["paths"].items():
                runs = ", ".join(
                    f"{job.removesuffix('_job')} {sec:.1f}"
                    for job, sec in path["median_run_s"].items()
                )
                out.append(
                    f"({name}) median run, s: {runs}; JVMs in a run: {path['max_jvms_seen']}"
                )
            server = results.get("spark_server", {})
            start = server.get("at_start", {})
            out.append(
                "Connect server warm before the first timed run: "
                + (
                    "already running"
                    if server.get("already_running")
                    else "started by the benchmark"
                )
                + f" (ensure_running {server.get('ensure_running_s', 0):.1f} s; uptime "
                f"{start.get('uptime_seconds', '?')} s, {start.get('memory_mib', '?')} MiB, "
                f"{start.get('sessions', '?')} sessions at start); shared with other users"
            )
        if backfill:
            runs = backfill["b"]["result"].get("runs", [])
            by_run = ", ".join(f"{'+'.join(r['assets'])} {r['run_s']:.1f}" for r in runs)
            out.append(f"(b) runs, s: {by_run}; outside runs {s['b_outside_runs_s']} s")
            for key in ("c", "c_optimized", *(k for k in REFERENCES if k in backfill)):
                phases = backfill[key]["result"].get("phases_s", {})
                out.append(
                    f"({key.replace('_optimized', chr(39))}) phases, s: "
                    + ", ".join(f"{k.replace('region ', '')} {v:.1f}" for k, v in phases.items())
                )
            files = {k: v["tables"]["silver/orders"] for k, v in backfill.items()}
            out.append(
                "silver/orders files per partition: "
                + ", ".join(f"{k} {v['files_per_partition']}" for k, v in files.items())
            )
    gate = results.get("gate")
    if gate and gate.get("result"):
        g = gate["result"]
        med = g["median_s"]
        first = g["first_action_median_s"]
        first_rounds = len(g.get("first_action_s", {}).get("count", [])) or "?"
        rows = [
            [name, _s(sec, 3), _s(_ratio(sec, med["count"]), 2), _s(_ratio(sec, gate_s), 2)]
            for name, sec in med.items()
            for gate_s in [med["gate_one_pass"]]
        ]
        out += [
            "",
            f"2. Quality gate on one partition of {g['rows']:,} lines",
            f"As the pipeline pays it, the first action on the partition (read the landing "
            f"files, classify, convert, fill the cache), median of {first_rounds}: "
            f"count() {_s(first['count'], 2)} s, one-pass gate {_s(first['gate_one_pass'], 2)} s, "
            f"gate / count() = {_s(s['gate_first_action_over_count'], 2)} "
            f"(target <= 1.3: {_verdict(s['gate_met'])})",
            f"On the cached rows (median of {g['repeats']}); count() reads no column there:",
            _table(["variant", "median s", "x count()", "x gate"], rows),
            f"one scan per check / one-pass gate = {_s(s['scan_per_check_over_gate'], 2)}",
        ]
    load = results.get("load")
    if load:
        imports = ", ".join(f"{k} {v:.2f}s" for k, v in load["import_s"].items())
        out += [
            "",
            "3. Code location load",
            f"dagster definitions validate: {_s(s['load_s'], 2)} s (fastest of "
            f"{len(load['validate_all_s'])}; median {load['validate_wall_s']:.2f} s), JVM "
            f"started: {'yes' if load['jvm_started'] else 'no'} (target <= 3 s, no JVM: "
            f"{_verdict(s['load_met'])})",
            f"the same command on an empty code location, alternating with it: "
            f"{_s(load.get('validate_empty_location_best_s'), 2)} s fastest, "
            f"{_s(load.get('validate_empty_location_s'), 2)} s median; the code location adds "
            f"{_s(s['load_over_empty_location_s'], 2)} s",
            f"imports in a fresh interpreter: {imports}",
        ]
    if backfill:
        mem = backfill["b"]["memory"]
        out += [
            "",
            "4. Peak memory during (b)",
            f"total {s['memory_peak_gib']:.2f} GiB (target <= 4 GiB: "
            f"{_verdict(s['memory_met'])}): Python {mem['main_mib']:.0f} MiB, JVM "
            f"{mem['jvm_mib']:.0f} MiB (the Connect server's), Python workers "
            f"{mem['python_workers_mib']:.0f} MiB ({mem['python_workers_seen']} processes)",
        ]
    conc = (a or {}).get("concurrent")
    if conc:
        mem = conc["memory"]
        before = conc.get("server_before") or {}
        out += [
            "",
            f"4b. {conc['runs']} concurrent regional runs on the Connect path ({conc['date']}), "
            "runs + server",
            f"peak total {s['concurrent_peak_gib']:.2f} GiB, JVMs seen {mem['jvms_seen']} "
            f"(target <= 3.5 GiB and one JVM: {_verdict(s['concurrent_memory_met'])}): "
            f"run processes {mem['main_mib']:.0f} MiB together, server JVM "
            f"{mem['jvm_mib']:.0f} MiB (it held {before.get('memory_mib', '?')} MiB with "
            f"{before.get('sessions', '?')} sessions before), others {mem['other_mib']:.0f} MiB; "
            f"all done in {_s(conc['all_done_s'])} s, ok={conc['ok']}",
        ]
    if s.get("scaling"):
        rows = [
            [
                f"{p['factor']}x",
                f"{p['lines']:,}",
                _s(p["wall_s"]),
                _s(p["cpu_s"]),
                _s(p["rows_per_s"], 0),
            ]
            for p in s["scaling"]
        ]
        out += [
            "",
            "5. Scaling of (b) with rows per partition",
            _table(["rows/partition", "lines", "wall s", "CPU s", "rows/s"], rows),
            f"fit: {_s(s.get('scaling_fixed_s'))} s fixed + "
            f"{_s(s.get('scaling_s_per_million_rows'), 2)} s per million rows",
        ]
    ui = results.get("ui_backfill")
    if ui:
        r = s["ui_backfill"]
        out += [
            "",
            "UI backfill (issue 12): the range as an asset backfill launched over the webserver",
            f"  (u) UI, daemon-executed: {ui['u']['wall_s']:.1f} s in {ui['u']['runs']} runs "
            f"({ui['u']['status']}); rounds {ui['rounds_wall_s']['u']}",
            f"  (b) CLI in-process: {ui['b']['wall_s']:.1f} s; rounds {ui['rounds_wall_s']['b']}",
            f"  (c) bare PySpark: {ui['c']['wall_s']:.1f} s; rounds {ui['rounds_wall_s']['c']}",
            f"  u/b {r['u_over_b']} (target <= {TARGETS['u_over_b_max']}: "
            f"{_verdict(r['u_over_b_met'])}), u/c {r['u_over_c']} "
            f"(target <= {TARGETS['u_over_c_max']}: {_verdict(r['u_over_c_met'])})",
        ]
    out += step_profile.format_section(results)
    if results.get("first_click"):
        from benchmarks.first_click import format_table

        out += ["", format_table(results["first_click"])]
    return "\n".join(out)
