"""Worker: the quality gate's cost on one large (date, region) partition.

The partition is read from the landing zone, classified and converted exactly as the `orders`
asset does, and persisted; then every variant runs on the same cached rows, round-robin, so
they measure only the gate work and share the machine's noise:

- `count`: a bare `count()` of the cached rows (reads no column: the floor of any action);
- `column_scan`: one aggregation that decodes the columns the gate reads, and nothing else
  (the floor of any gate that reads those columns);
- `gate_one_pass`: `regional_etl.transforms.gates.gate_stats(...).collect()`, the package's gate
  (uniqueness counted per order_id, then per partition, on the partitioning `classify` leaves);
- `gate_no_uniqueness`: the same counts without uniqueness, to attribute its cost;
- `gate_count_distinct`: the counts plus `count_distinct(order_id)` in one aggregation, the
  textbook form (Spark plans it as an Expand and a shuffle of the doubled rows);
- `scan_per_check`: one Spark job per metric, as per-column null checks would run them.

It also measures the gate as the pipeline pays it: as the first action on the persisted frame
(the one that fills the cache), against a `count()` that fills the cache the same way.

    python -m benchmarks.gate --landing L --date D --region R --repeats N [--no-warm-up]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

STATS_COLUMNS: tuple[str, ...] = (
    "lines",
    "orders",
    "quarantined",
    "null_order_id",
    "null_user_id",
    "distinct_order_ids",
    "bad_amounts",
    "missing_fx",
)


def _count_if(cond: Column) -> Column:
    from pyspark.sql import functions as F

    return F.sum(F.when(cond, 1).otherwise(0)).cast("long")


def _conditions() -> dict[str, Column]:
    """The gate's per-row conditions, as `gate_stats` defines them."""
    from pyspark.sql import functions as F

    valid = F.col("reason").isNull()

    def blank(name: str) -> Column:
        return F.col(name).isNull() | (F.trim(F.col(name)) == "")

    return {
        "valid": valid,
        "null_order_id": valid & blank("order_id"),
        "null_user_id": valid & blank("user_id"),
        "bad_amounts": valid
        & (F.col("amount").isNull() | (F.col("amount") <= 0) | F.col("amount_usd").isNull()),
        "missing_fx": valid & F.col("fx_rate").isNull(),
    }


def _counts(c: dict[str, Column]) -> list[Column]:
    from pyspark.sql import functions as F

    return [
        F.count(F.lit(1)).alias("lines"),
        _count_if(c["valid"]).alias("orders"),
        _count_if(~c["valid"]).alias("quarantined"),
        _count_if(c["null_order_id"]).alias("null_order_id"),
        _count_if(c["null_user_id"]).alias("null_user_id"),
        _count_if(c["bad_amounts"]).alias("bad_amounts"),
        _count_if(c["missing_fx"]).alias("missing_fx"),
    ]


def gate_no_uniqueness(converted: DataFrame) -> DataFrame:
    return converted.groupBy("order_date", "region").agg(*_counts(_conditions()))


def gate_count_distinct(converted: DataFrame) -> DataFrame:
    """The gate's numbers with uniqueness as `count_distinct`, in one aggregation."""
    from pyspark.sql import functions as F

    c = _conditions()
    return converted.groupBy("order_date", "region").agg(
        *_counts(c),
        F.count_distinct(F.when(c["valid"], F.col("order_id"))).alias("distinct_order_ids"),
    )


def scan_per_check(converted: DataFrame) -> dict[str, int]:
    """One Spark job per metric, as a check-per-column library would run them."""
    c = _conditions()
    valid = converted.where(c["valid"])
    return {
        "lines": converted.count(),
        "orders": valid.count(),
        "quarantined": converted.where(~c["valid"]).count(),
        "null_order_id": converted.where(c["null_order_id"]).count(),
        "null_user_id": converted.where(c["null_user_id"]).count(),
        "distinct_order_ids": valid.select("order_id").distinct().count(),
        "bad_amounts": converted.where(c["bad_amounts"]).count(),
        "missing_fx": converted.where(c["missing_fx"]).count(),
    }


def column_scan(converted: DataFrame) -> list[Any]:
    """Decode the columns the gate reads, aggregate trivially: what reading them costs."""
    from pyspark.sql import functions as F

    used = ["reason", "order_id", "user_id", "amount", "amount_usd", "fx_rate"]
    return converted.agg(F.count(F.lit(1)), F.sum(F.hash(*used))).collect()


def _as_stats(rows: list[Any]) -> dict[str, int]:
    """Sum the per-partition rows (one here) into one comparable dict."""
    out = dict.fromkeys(STATS_COLUMNS, 0)
    for r in rows:
        d = r if isinstance(r, dict) else r.asDict()
        for name in STATS_COLUMNS:
            out[name] += int(d[name])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--landing", required=True)
    parser.add_argument("--date", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="no unmeasured warm-up rounds: a smoke run, whose timings mean nothing",
    )
    args = parser.parse_args(argv)

    from pyspark import StorageLevel

    from benchmarks.bare_spark import fx_rows
    from benchmarks.classic_spark import start_session
    from benchmarks.common import emit
    from regional_etl.contract import Table, schema
    from regional_etl.io.landing import read_drops, ready_drop
    from regional_etl.partitions import DateRegion
    from regional_etl.transforms.gates import gate_stats
    from regional_etl.transforms.orders import classify, convert

    spark = start_session("local[*]", "2g", {})

    partition = DateRegion(args.date, args.region)
    fx = spark.createDataFrame(fx_rows([args.date]), schema(Table.FX_RATES)).cache()
    fx.count()
    lines = read_drops(spark, args.landing, [ready_drop(args.landing, partition)])

    def fresh() -> DataFrame:
        return convert(classify(lines), fx).persist(StorageLevel.MEMORY_AND_DISK)

    # In the pipeline the gate is the first action on the persisted frame: it pays for reading,
    # classifying and converting, and fills the cache that the writes then reuse.
    first_action: dict[str, list[float]] = {"count": [], "gate_one_pass": []}
    first_action_fns: dict[str, Callable[[DataFrame], object]] = {
        "count": lambda df: df.count(),
        "gate_one_pass": lambda df: gate_stats(df).collect(),
    }
    # Round 0 warms the JVM up (class loading, code generation) and is not kept.
    warm_up = 1 if args.warm_up else 0
    for round_number in range(max(1, args.repeats // 2) + warm_up):
        for name, fn in first_action_fns.items():
            df = fresh()
            started = time.perf_counter()
            fn(df)
            if round_number >= warm_up:
                first_action[name].append(time.perf_counter() - started)
            df.unpersist(blocking=True)

    converted = fresh()
    rows = converted.count()
    variants: dict[str, Callable[[], object]] = {
        "count": converted.count,
        "column_scan": lambda: column_scan(converted),
        "gate_one_pass": lambda: gate_stats(converted).collect(),
        "gate_no_uniqueness": lambda: gate_no_uniqueness(converted).collect(),
        "gate_count_distinct": lambda: gate_count_distinct(converted).collect(),
        "scan_per_check": lambda: scan_per_check(converted),
    }
    # One warm-up round (JIT, code generation), then round-robin so the noise is shared.
    answers: dict[str, object] = (
        {name: fn() for name, fn in variants.items()} if args.warm_up else {}
    )
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            started = time.perf_counter()
            answer = fn()
            timings[name].append(time.perf_counter() - started)
            answers.setdefault(name, answer)  # with no warm-up round, the first timed one

    # Every exact variant must agree with the package's gate, or its timing means nothing.
    reference = _as_stats(answers["gate_one_pass"])  # type: ignore[arg-type]
    agree = {
        name: _as_stats(answers[name]) == reference  # type: ignore[arg-type]
        for name in ("gate_count_distinct",)
    }
    agree["scan_per_check"] = answers["scan_per_check"] == reference
    spark.stop()
    emit(
        {
            "rows": rows,
            "repeats": args.repeats,
            "median_s": {k: round(statistics.median(v), 4) for k, v in timings.items()},
            "all_s": {k: [round(x, 4) for x in v] for k, v in timings.items()},
            "first_action_median_s": {
                k: round(statistics.median(v), 4) for k, v in first_action.items()
            },
            "first_action_s": {k: [round(x, 4) for x in v] for k, v in first_action.items()},
            "agrees_with_gate": agree,
            "gate_stats": reference,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
