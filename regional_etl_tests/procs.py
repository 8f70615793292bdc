"""Which JVMs a process started, read from /proc (Linux), for tests that must prove one did or
did not start."""

from __future__ import annotations

from pathlib import Path


def java_children(pid: int) -> list[int]:
    """Live direct children of `pid` whose command line mentions java (the JVM, or a launcher
    script on its way to becoming one)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (field 2) may hold spaces and parentheses: split after its ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # the process exited while we looked
        if int(fields[1]) == pid and b"java" in cmdline:
            found.append(int(stat.parent.name))
    return found
