"""A new user's first click, on a Spark server that has just started, then on a warm one.

    python -m benchmarks.first_click [--rows N] [--project DIR] [--work DIR] [--keep]

What a user does on a new install: `dagster dev` (webserver and daemon, the project's
workspace.yaml and dagster.yaml, a fresh DAGSTER_HOME) with no Spark server running, open the
asset graph, then materialize one (date, region) of `orders` with its upstream, through the same
dialogs the browser tests use (`regional_etl_tests/test_ui.py`): `fx_rates` of the date, then
`raw_orders` with `orders` and `orders_quarantine` for the date and region. The first click's
runs start the Spark server (one of the benchmark's own, in a state folder under its scratch
folder: nothing shared is stopped or reused). Then the same for another date and region, on the
now-warm server.

Each click is timed from the click on Launch to the run's end (the instance's run record), for
the FX run and for the partition's run; a click's figure is their sum, what the user waits for
(the dialogs in between are the user's own time). Printed as a table and kept in
`artifacts/browser/click.json`. Every process group it starts is stopped at the end, the Spark
server's included. `--project` runs another checkout of the project (an earlier commit exported
to a folder) with this benchmark, to measure before and after a change in one session.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from benchmarks.common import PROJECT
from regional_etl_tests.browser import ARTIFACTS, VIEWPORT, Shots, chromium, skip_newsletter
from regional_etl_tests.e2e_support import DAGSTER_BIN, dagster_dev, loaded_location, stop_tree

# The drops the UI tests use: small, so the figures are the fixed costs a click pays.
ROWS = 200
DAYS = (dt.date(2024, 3, 4), dt.date(2024, 3, 5))
CLICKS = (("fresh", "2024-03-04", "us-east"), ("warm", "2024-03-05", "eu-west"))
RUN_TIMEOUT = 600.0
POLL_SECONDS = 0.5
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
SENSORS = ("landing_sensor", "regional_automation")
RUN_QUERY = """
query ($filter: RunsFilter) {
  runsOrError(filter: $filter, limit: 5) {
    __typename
    ... on Runs { results { runId status creationTime startTime endTime } }
  }
}
"""


def product_env(project: Path, work: Path, state_dir: Path) -> dict[str, str]:
    """The shell a user starts `dagster dev` from: nothing of the developer's project settings,
    the Spark server's state in a folder of this benchmark's own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGIONAL_ETL_", "DAGSTER_", "PYSPARK_", "SPARK_"))
    }
    env.update(
        {
            "PATH": f"{DAGSTER_BIN.parent}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(project),
            "DAGSTER_HOME": str(work / "home"),
            "REGIONAL_ETL_LANDING": str(work / "landing"),
            "REGIONAL_ETL_WAREHOUSE": str(work / "warehouse"),
            "REGIONAL_ETL_SPARK_STATE_DIR": str(state_dir),
            # The UI tests' floor: a 200-line drop is a valid one.
            "REGIONAL_ETL_GATE_MIN_ROWS": "10",
            "PYTHONWARNINGS": "ignore",
        }
    )
    if os.environ.get("REGIONAL_ETL_JARS_DIR"):
        env["REGIONAL_ETL_JARS_DIR"] = os.environ["REGIONAL_ETL_JARS_DIR"]
    return env


def measure(
    work: Path, project: Path = PROJECT, rows: int = ROWS, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Both clicks on a fresh instance and a fresh Spark server; the figures of click.json."""
    from regional_etl.generate import GenerateSummary, generate_landing
    from regional_etl_tests.test_ui import UIProject

    work.mkdir(parents=True, exist_ok=True)
    state_dir = work / "spark-state"
    home = work / "home"
    home.mkdir()
    shutil.copy(project / "dagster.yaml", home / "dagster.yaml")
    env = product_env(project, work, state_dir)
    result: dict[str, Any] = {
        "project": str(project),
        "commit": _commit(project),
        "rows": rows,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_before": _uptime(),
    }
    try:
        say("dagster dev on a fresh instance, no Spark server running")
        with dagster_dev(project / "workspace.yaml", home, env, work / "dagster-dev.log") as dev:
            repo = loaded_location(dev)
            landing = work / "landing"
            ui = UIProject(dev, repo, landing, work / "warehouse", GenerateSummary(landing, ()))
            # Stopped before any drop lands, as in the UI tests: only the clicks run anything.
            for name in SENSORS:
                ui.stop_sensor(name)
            generate_landing(landing, *DAYS, rows=rows)
            try:
                with chromium() as browser:
                    context = browser.new_context(viewport=VIEWPORT)
                    page = context.new_page()
                    page.set_default_timeout(60_000)
                    shots = Shots(page, work, "first-click")
                    page.goto(dev.url)
                    skip_newsletter(page)
                    # A new user looks at the graph first.
                    page.goto(f"{dev.url}/assets/orders?view=lineage")
                    for asset in ("fx_rates", "raw_orders", "orders", "daily_revenue"):
                        page.get_by_text(asset, exact=True).first.wait_for()
                    for name, day, region in CLICKS:
                        say(f"{name} click: {day}|{region} with its upstream")
                        result[name] = _click(page, shots, dev, day, region)
                        say(f"{name} click: {result[name]}")
                    context.close()
            finally:
                # Nothing here needs a clean shutdown: a short grace, then SIGKILL.
                stop_tree(dev.proc, grace=5.0)
    finally:
        result["spark_server"] = _stop_spark_server(state_dir, env)
        result["load_after"] = _uptime()
    result["fresh_s"] = result["fresh"]["click_s"]
    result["warm_s"] = result["warm"]["click_s"]
    result["load"] = [result["load_before"][0], result["load_after"][0]]
    return result


def _click(page: Any, shots: Shots, dev: Any, day: str, region: str) -> dict[str, Any]:
    """One partition with its upstream, as test_ui's one-partition test clicks it."""
    from regional_etl_tests.test_ui import launch_from_dialog, open_materialize_dialog, pick_region

    launch = re.compile(r"^Launch")
    page.goto(f"{dev.url}/assets/fx_rates")
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Show all partitions").click()
    dialog.get_by_role("textbox").first.fill(day)
    page.keyboard.press("Tab")
    shots(f"fx-{day}")
    clicked = time.time()
    launch_from_dialog(page, launch)
    fx = _wait_run(dev, day, clicked)

    dialog = open_materialize_dialog(page, dev.url, downstream_all=False)
    dialog.get_by_role("textbox").first.fill(day)
    page.keyboard.press("Tab")
    pick_region(page, dialog, region)
    shots(f"partition-{day}-{region}")
    clicked = time.time()
    launch_from_dialog(page, launch)
    partition = _wait_run(dev, f"{day}|{region}", clicked)
    page.goto(f"{dev.url}/runs")
    page.get_by_text("Success").first.wait_for()
    shots(f"runs-{day}-{region}")
    return {
        "partition": f"{day}|{region}",
        "click_s": round(fx["click_to_end_s"] + partition["click_to_end_s"], 1),
        "fx": fx,
        "orders": partition,
    }


def _wait_run(dev: Any, partition: str, clicked: float) -> dict[str, Any]:
    """The run of `partition` once it ended: from the click to its end, queued, running."""
    tags = [{"key": "dagster/partition", "value": partition}]
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        runs = dev.graphql(RUN_QUERY, {"filter": {"tags": tags}})["runsOrError"]["results"]
        if runs and runs[0]["status"] in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the run of {partition} did not end in {RUN_TIMEOUT:.0f} s: {runs}")
        dev.check_alive()
        time.sleep(POLL_SECONDS)
    [run] = runs  # one click, one run
    if run["status"] != "SUCCESS":
        raise RuntimeError(f"the run of {partition} ended {run['status']}: {run['runId']}")
    return {
        "run_id": run["runId"],
        "click_to_end_s": round(run["endTime"] - clicked, 1),
        "queued_s": round(run["startTime"] - run["creationTime"], 1),
        "run_s": round(run["endTime"] - run["startTime"], 1),
    }


def _stop_spark_server(state_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """Stop the benchmark's own Spark server (its supervisor's whole process group); what its
    log said, for the record."""
    log = state_dir / "server.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    subprocess.run(
        [sys.executable, "-m", "regional_etl.cli", "spark-server", "stop"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    # A supervisor still starting has published no state for `stop` to find: its scratch
    # folder is named after it.
    scratch = state_dir / "scratch"
    for folder in scratch.iterdir() if scratch.exists() else ():
        if folder.name.isdigit():
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(int(folder.name), signal.SIGKILL)
    return {"log_lines": [line for line in text.splitlines() if "warm" in line.lower()]}


def _uptime() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _commit(project: Path) -> str:
    found = subprocess.run(
        ["git", "-C", str(project), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or (project / "COMMIT").read_text().strip()


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"First click (commit {result['commit']}, {result['rows']} lines per drop, "
        f"load average {result['load_before']} -> {result['load_after']})",
        "| click | partition | total s | fx: click to end s | fx run s | partition: click "
        "to end s | queued s | run s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("fresh", "warm"):
        c = result.get(name)
        if c is None:
            lines.append(f"| {name} | n/a |")
            continue
        fx, o = c["fx"], c["orders"]
        lines.append(
            f"| {name} | {c['partition']} | {c['click_s']} | {fx['click_to_end_s']} | "
            f"{fx['run_s']} | {o['click_to_end_s']} | {o['queued_s']} | {o['run_s']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=ROWS, help="lines per drop")
    parser.add_argument(
        "--project", type=Path, default=PROJECT, help="the checkout to run (default: this one)"
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    # A SIGTERM unwinds like an exception: every `finally` stops what it started.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="regional-etl-first-click-", dir=args.work))
    try:
        result = measure(work, args.project.resolve(), args.rows, say=_say)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "click.json").write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"\nJSON: {ARTIFACTS / 'click.json'}")
    return 0


def _say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
