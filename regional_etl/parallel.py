"""Independent Spark actions of one step, issued at once on one Spark Connect session.

A run of one (date, region) is a chain of small Spark actions, each a round trip, a Delta log
read and a few tasks, and the client only waits meanwhile. The Spark Connect client is made for
threads (its tags and context extensions are per thread, every action is its own gRPC stream
with its own operation id), and the server runs the jobs of one session side by side, so
actions that do not depend on each other, the writes of `silver/orders` and of its quarantine,
say, can overlap. On a 2-core server that is already busy the gain is small: the `orders` step
of one region-day went from 5.6 s to 5.1 s (median, benchmarks/README.md).
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
