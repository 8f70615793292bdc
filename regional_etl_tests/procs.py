"""Which JVMs a process started, read from /proc (Linux), for tests that must prove one did or
did not start."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def process_stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/<pid>/stat after the command name, for every process: [0] is
    the state, [1] the parent pid, [2] the process group, [19] the start time."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (field 2) may hold spaces and parentheses: split after its ")".
            stats[int(stat.parent.name)] = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process exited while we looked
    return stats


def java_children(pid: int) -> list[int]:
    """Live direct children of `pid` whose command line mentions java (the JVM, or a launcher
    script on its way to becoming one)."""
    found = []
    for child, fields in process_stats().items():
        if int(fields[1]) != pid:
            continue
        try:
            if b"java" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


@contextmanager
def process_groups(*argvs: list[str], **popen: Any) -> Iterator[list[subprocess.Popen]]:
    """Start each command in a process group of its own; on leaving (success, failure or a
    timeout in the body), end every group: SIGTERM, then SIGKILL after a grace."""
    procs: list[subprocess.Popen] = []
    try:
        for argv in argvs:
            procs.append(subprocess.Popen(argv, start_new_session=True, **popen))
        yield procs
    finally:
        for proc in procs:
            _end_group(proc)


def _end_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; the rest of its group gets the rest of the grace.
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(proc.pid):
            time.sleep(0.1)
    if proc.poll() is None:
        proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# Set in the test session's environment: every process the suite starts inherits it (unless a
# test builds an environment from nothing), so the suite can find its own processes at the end,
# and only those, among other users' and other sessions'.
SESSION_MARKER = "PYTEST_REGIONAL_ETL_SESSION"


def marked_processes(
    value: str, words: tuple[bytes, ...] = (b"java", b"dagster")
) -> dict[int, str]:
    """pid -> command line of every live process whose environment carries SESSION_MARKER=value
    and whose command line mentions one of `words` (zombies are dead already: not counted)."""
    needle = f"{SESSION_MARKER}={value}".encode()
    found = {}
    for pid, fields in process_stats().items():
        if pid == os.getpid() or fields[0] == "Z":
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone, or not ours to read (another user's)
        if needle in environ.split(b"\0") and any(w in cmdline for w in words):
            found[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
    return found
