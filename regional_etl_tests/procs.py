"""The processes the tests start and look at (with psutil): which JVMs a process started, the
process groups a test ends whatever happens, what listens where, and what the suite left
behind."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil


def java_children(pid: int) -> list[int]:
    """Live direct children of `pid` whose command line mentions java (the JVM, or a launcher
    script on its way to becoming one)."""
    found = []
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    for child in children:
        try:
            if any("java" in arg for arg in child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue  # exited (or a zombie) since the listing
    return found


def group_members(pgids: set[int]) -> dict[int, str]:
    """pid -> psutil status of every process in the given process groups, zombies included."""
    found = {}
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) in pgids:
                found[process.pid] = process.status()
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue  # exited since the listing
    return found


def listening_addresses(pids: Iterable[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket these processes listen on; an IPv4-mapped IPv6
    address is given in its IPv4 form."""
    found = set()
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue  # gone, or a zombie
        for connection in connections:
            if connection.status != psutil.CONN_LISTEN:
                continue
            address = ipaddress.ip_address(connection.laddr.ip)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            found.add((str(address), connection.laddr.port))
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


def marked_processes(value: str, words: tuple[str, ...] = ("java", "dagster")) -> dict[int, str]:
    """pid -> command line of every live process whose environment carries SESSION_MARKER=value
    and whose command line mentions one of `words` (zombies are dead already: not counted)."""
    found = {}
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            # A zombie's command line is gone (ZombieProcess): dead already, not counted.
            cmdline = " ".join(process.cmdline())
            if any(w in cmdline for w in words) and process.environ().get(SESSION_MARKER) == value:
                found[process.pid] = cmdline[:200]
        except psutil.Error:
            continue  # gone, a zombie, or not ours to read (another user's)
    return found
