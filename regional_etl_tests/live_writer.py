"""A live-location writer in a process of its own, for the race tests: it commits one
`reference/fx_rates` partition of blue per command, through the path the live assets write
through (`release.write_paths`, so each commit holds the shared side of the release lock).

    python -m regional_etl_tests.live_writer <warehouse root> <date> <Spark conf as JSON>

Reads `<run id> <rate> <wait seconds>` lines on stdin; for each, waits, then writes `<date>`'s
rates (every currency at `<rate>`) tagged with the run id, and answers one JSON line on stdout:
`committed` (with the Delta version), `moved` (LiveNamespaceMoved: nothing written) or `error`,
with the times it held the lock. Prints `{"ready": true}` once its Spark session is up; ends at
the end of stdin.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any


def main(root: str, date: str, conf: str) -> None:
    from regional_etl import release
    from regional_etl.contract import CURRENCIES, Table, schema
    from regional_etl.io.delta import daily_predicate, replace_partitions
    from regional_etl.resources.warehouse import WarehouseResource
    from regional_etl.spark.resource import SparkResource

    spark = SparkResource(session_config=json.loads(conf)).session_for(0)
    paths = release.write_paths(WarehouseResource(warehouse_root=root))
    guard = paths.commit_guard
    assert guard is not None, "blue's writes must be guarded"
    day = dt.date.fromisoformat(date)

    def answer(**fields: Any) -> None:
        print(json.dumps(fields), flush=True)

    held: list[float] = []  # when the last commit took and left the lock

    @contextlib.contextmanager
    def timed(table: Table, predicate: str) -> Iterator[None]:
        with guard(table, predicate):
            held.append(time.time())
            try:
                yield
            finally:
                held.append(time.time())

    answer(ready=True)
    for line in sys.stdin:
        run_id, rate, wait = line.split()
        held.clear()
        time.sleep(float(wait))
        rows = [(day, c, Decimal(rate)) for c in CURRENCIES]
        frame = spark.createDataFrame(rows, schema(Table.FX_RATES))
        try:
            result = replace_partitions(
                frame,
                paths.table(Table.FX_RATES),
                Table.FX_RATES,
                daily_predicate([date]),
                run_id,
                guard=timed,
            )
        except release.LiveNamespaceMoved as exc:
            answer(run_id=run_id, outcome="moved", message=str(exc), held=held)
        except Exception as exc:  # the test fails on it, with the message
            answer(run_id=run_id, outcome="error", message=repr(exc), held=held)
        else:
            answer(run_id=run_id, outcome="committed", version=result.version, held=held)
    spark.stop()


if __name__ == "__main__":
    main(*sys.argv[1:])
