"""Shortens the fixed 30-second loop of the Dagster daemons that the tests start.

Dagster's backfill daemon sleeps `DEFAULT_DAEMON_INTERVAL_SECONDS` (30 s, not configurable)
between iterations, and an asset backfill advances one level of the asset graph per iteration: a
backfill of our four levels idles about two minutes in every test that launches one through the
daemon. Tests put this folder on PYTHONPATH with DAEMON_TICK_SECONDS_FOR_TESTS set
(`e2e_support.daemon_tick_env`; not a REGIONAL_ETL_ name, which the benchmark's and the tests'
environment cleaners drop); Python imports `sitecustomize` at the start of every process, and
in a daemon process (`dagster-daemon run`, or the one `dagster dev` starts as `python -m
dagster._daemon`) this lowers the interval before the daemon reads it. Every other process is
left alone, and everything else about the daemon is Dagster's own.
"""

import os
import sys

_SECONDS = os.environ.get("DAEMON_TICK_SECONDS_FOR_TESTS")


def _is_daemon(argv: list[str]) -> bool:
    return "dagster._daemon" in argv or any(os.path.basename(a) == "dagster-daemon" for a in argv)


if _SECONDS and _is_daemon(list(getattr(sys, "orig_argv", []))):
    from dagster._daemon import controller

    # Fail loudly when a Dagster upgrade renames it, rather than silently idling again.
    if not hasattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS"):
        raise RuntimeError("dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS is gone")
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = float(_SECONDS)  # type: ignore[assignment]
