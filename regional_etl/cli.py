"""`regional-etl` commands: setup-jars, generate, fx-server, spark-server, backfill, demo."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from regional_etl import settings
from regional_etl.contract import REGIONS

if TYPE_CHECKING:  # importing the package at start-up would print Dagster's beta warnings
    from regional_etl.backfill import BackfillReport, Progress

DEMO_START, DEMO_END = "2024-03-04", "2024-03-10"

# `regional-etl backfill` exit statuses (2 is a user error, as for every command).
EXIT_OK = 0  # every targeted partition published, nothing waits
EXIT_FAILED = 1  # a partition or a run failed (whatever else is pending)
EXIT_PENDING = 3  # nothing failed, but a drop is not ready yet and gold of its date is held back
BACKFILL_EXIT_HELP = (
    f"exit status: {EXIT_OK} everything targeted was published; {EXIT_FAILED} a partition or a "
    f"run failed; 2 a usage error; {EXIT_PENDING} nothing failed, but a drop is not ready yet "
    "(no _SUCCESS) and daily_revenue of its date is held back: run the same command again once "
    "it has landed"
)


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a YYYY-MM-DD date") from exc


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return number


def _port(value: str) -> int:
    port = _positive_int(value)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return port


class _Parser(argparse.ArgumentParser):
    """A user error is one line and exit status 2: no usage block, never a traceback."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cmd_setup_jars(args: argparse.Namespace) -> int:
    from regional_etl.spark.jars import resolve_jars

    jars = resolve_jars()
    print(f"{len(jars)} jars ready in {Path(jars[0]).parent}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from regional_etl.generate import generate_landing

    root = Path(args.landing or settings.LANDING.get() or "./data/landing")
    summary = generate_landing(
        root,
        args.start,
        args.end,
        rows=args.rows,
        seed=args.seed,
        anomalies=args.anomalies,
        regions=args.regions,
    )
    print(f"wrote {len(summary.drops)} drops, {summary.total_lines} lines under {root}")
    return 0


def _cmd_fx_server(args: argparse.Namespace) -> int:
    from regional_etl.fx.rates import history_end
    from regional_etl.fx.server import FXServer

    server = FXServer(args.port)
    print(f"FX server at {server.url} (ECB history to {history_end()})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()
    return 0


def _cmd_spark_server(args: argparse.Namespace) -> int:
    from regional_etl.spark import server as spark_server

    if args.action == "start":
        state = spark_server.ensure_running()
    elif args.action == "stop":
        stopped = spark_server.stop()
        print(f"stopped {stopped.url} (pid {stopped.jvm_pid})" if stopped else "not running")
        return 0
    else:
        state = spark_server.read_state()
        if state is None:
            print(f"not running (state folder {spark_server.state_dir()})")
            return 3
    for key, value in spark_server.describe(state).items():
        print(f"{key:>16}: {value}")
    return 0


def _instance():
    from dagster import DagsterInstance

    if not settings.DAGSTER_HOME.is_set():
        raise SystemExit(
            "DAGSTER_HOME is not set: point it at the folder holding dagster.yaml "
            "(scripts/setup.sh uses the project folder)"
        )
    return DagsterInstance.get()


class _ProgressBar:
    """rich's progress bar on stdout: redrawn in place in a terminal, a line per change when the
    output is a file or a pipe."""

    def __init__(self) -> None:
        from rich import progress as rich_progress
        from rich.console import Console

        from regional_etl.backfill import REPORT_WIDTH

        self.console = Console(file=sys.stdout)
        if not self.console.is_terminal:  # a file has no width: the summary's
            self.console.width = REPORT_WIDTH
        self.bar = rich_progress.Progress(
            rich_progress.BarColumn(bar_width=30),
            "{task.fields[done]}/{task.fields[targeted]} partitions published, "
            "{task.fields[failed]} failed  {task.fields[status]}",
            console=self.console,
        )
        fields = {"done": 0, "targeted": 0, "failed": 0, "status": ""}
        self.task = self.bar.add_task("backfill", total=None, **fields)
        self.last: Progress | None = None

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.console.is_terminal:
            self.bar.stop()  # the last state stays on screen, and the cursor comes back

    def __call__(self, progress: Progress) -> None:
        if progress == self.last:
            return
        self.last = progress
        self.bar.update(
            self.task,
            completed=progress.done + progress.failed,
            total=max(progress.total, 1),
            done=progress.done,
            targeted=progress.total,
            failed=progress.failed,
            status=progress.status.lower(),
        )
        if self.console.is_terminal:
            self.bar.start()
        else:
            self.console.print(self.bar)


def _cmd_backfill(args: argparse.Namespace) -> int:
    from regional_etl.backfill import format_report, run_backfill
    from regional_etl.definitions import defs

    with _ProgressBar() as progress:
        report = run_backfill(
            defs,
            _instance(),
            args.start.isoformat(),
            args.end.isoformat(),
            regions=args.regions,
            progress=progress,
            webserver=getattr(args, "webserver", None),
        )
    print(format_report(report))
    return backfill_exit_status(report)


def backfill_exit_status(report: BackfillReport) -> int:
    """Failed beats pending: a cron job retries a pending range, a failure needs a person."""
    if report.failed:
        return EXIT_FAILED
    return EXIT_PENDING if report.pending else EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    args.start, args.end = _date(DEMO_START), _date(DEMO_END)
    args.rows, args.seed, args.anomalies, args.landing = args.rows, 7, True, None
    _cmd_generate(args)
    # The embedded default: without REGIONAL_ETL_FX_URL the runs read the bundled ECB history.
    code = _cmd_backfill(args)
    home = settings.DAGSTER_HOME.get() or "."
    print(
        "\nOpen the UI:  DAGSTER_HOME="
        f"{home} .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000\n"
        "then browse http://127.0.0.1:3000 (assets, partitions; the runs of this demo on the "
        "Runs page with 'Show runs within backfills')."
    )
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="regional-etl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("setup-jars", help="resolve the Delta jars once into the project cache")

    gen = sub.add_parser("generate", help="write a deterministic synthetic landing zone")
    gen.add_argument("--start", type=_date, required=True)
    gen.add_argument("--end", type=_date, required=True)
    gen.add_argument(
        "--rows", type=_positive_int, default=1000, help="lines per (date, region) drop"
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--anomalies", action="store_true", help="inject contract violations")
    gen.add_argument("--regions", nargs="+", default=list(REGIONS), choices=REGIONS)
    gen.add_argument("--landing", help="landing root (default $REGIONAL_ETL_LANDING)")

    fx = sub.add_parser("fx-server", help="serve the bundled ECB rates (Frankfurter API)")
    fx.add_argument("--port", type=_port, default=8765)

    server = sub.add_parser(
        "spark-server", help="the local Spark Connect server every run uses: start, stop, status"
    )
    server.add_argument("action", choices=["start", "stop", "status"])

    bf = sub.add_parser(
        "backfill",
        help="run the pipeline for a date range and report",
        description="Run every asset over the ready drops of a date range as one Dagster asset "
        "backfill, and report each (date, region). With a dagster-daemon running on the "
        "instance of $DAGSTER_HOME, the daemon executes it and the UI's Backfills page lists it. "
        "Without one, this command executes the same runs itself, one after the other; only "
        "the daemon records a backfill, so the Backfills page does not list it, but its runs "
        "carry its tag: the Runs page shows them with 'Show runs within backfills' or the tag "
        "filter dagster/backfill=<id>.",
        epilog=BACKFILL_EXIT_HELP,
    )
    bf.add_argument("--start", type=_date, required=True)
    bf.add_argument("--end", type=_date, required=True)
    bf.add_argument("--regions", nargs="+", default=list(REGIONS), choices=REGIONS)
    bf.add_argument(
        "--webserver",
        metavar="URL",
        help="base URL of the Dagster webserver of the instance (e.g. http://127.0.0.1:3000): "
        "a backfill for the daemon is submitted to its GraphQL API (default: the same API, "
        "served in this process)",
    )

    demo = sub.add_parser("demo", help="generate a week of data and materialize everything")
    demo.add_argument("--rows", type=_positive_int, default=2000)
    demo.add_argument("--regions", nargs="+", default=list(REGIONS), choices=REGIONS)
    return parser


COMMANDS = {
    "setup-jars": _cmd_setup_jars,
    "generate": _cmd_generate,
    "fx-server": _cmd_fx_server,
    "spark-server": _cmd_spark_server,
    "backfill": _cmd_backfill,
    "demo": _cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    # Dagster flags the beta/preview APIs the code location uses on every import; that is for
    # us, not for the person at the terminal.
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")
    parser = build_parser()
    args = parser.parse_args(argv)
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if start and end and end < start:
        parser.error(f"--end {end} is before --start {start}")
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
