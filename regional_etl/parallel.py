"""Independent Spark actions of one step, issued at once on one Spark Connect session.

A run of one (date, region) is a chain of small Spark actions, each mostly a round trip, a
Delta log read and one task: the server's other cores sit idle while the client waits. The
Spark Connect client is thread-safe (every action is its own gRPC stream, tagged with its own
operation id), and the server runs the jobs of one session side by side when cores are free, so
actions that do not depend on each other, the writes of `silver/orders` and of its quarantine,
say, can overlap. On a busy server they queue as they would have one after the other.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

A = TypeVar("A")
B = TypeVar("B")


def concurrently(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """Run both actions in threads and return their results. Both run to their end before
    anything is raised (a write is never left running behind a raise); then the first action's
    error is raised, else the second's."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="spark-action") as pool:
        a, b = pool.submit(first), pool.submit(second)
    # Leaving the `with` waited for both.
    for future in (a, b):
        if (exc := future.exception()) is not None:
            raise exc
    return a.result(), b.result()
