"""Reference (d): the data contract in one DuckDB process, no Spark, no Dagster.

A FIXED REFERENCE, like `reference_spark.py`: the pipeline's backfill is judged against it
(goal: at most 3x its time), so it is written the way a DuckDB user would first write it and
is not optimized along with the pipeline. It imports none of the package's pipeline,
transforms or I/O code. DuckDB is a benchmark-only extra (`pip install -e ".[bench]"`); the
package never imports it.

Output: **Parquet, not Delta**. DuckDB writes Delta only through an extension it downloads at
run time, and delta-rs would be a second writer, so the tables are Parquet in the warehouse's
layout (the same table folders, Hive-style `order_date=.../region=...` partition folders, the
contract's column types). A rerun replaces its partitions: their folders are deleted, then
written again (not atomic, unlike a Delta commit).

Simplifications against the contract: `read_text` refuses a file that is not UTF-8 (so no
`invalid_encoding` line, the run fails), and a line over 1 MiB keeps its first 1,024
characters rather than bytes. The benchmark's generated input has neither.

    python -m benchmarks.reference_duckdb --landing L --warehouse W --start D --end D
        [--regions R,...]
"""

from __future__ import annotations

import shutil
import time
import uuid

T0 = time.perf_counter()

ISO_TS = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$"

LINES = """
CREATE TABLE lines AS
WITH texts AS (
    SELECT
        regexp_extract(filename, '(region=[^/]+/date=[^/]+/[^/]+)$', 1) AS source_file,
        string_split(regexp_replace(regexp_replace(content, '^\ufeff', ''), '\n$', ''), '\n')
            AS parts
    FROM read_text($files)
    WHERE size > 0
), numbered AS (
    SELECT source_file, unnest(parts) AS line, generate_subscripts(parts, 1) AS line_number
    FROM texts
)
SELECT
    regexp_replace(line, '\r$', '') AS line,
    source_file,
    line_number::BIGINT AS line_number,
    regexp_extract(source_file, 'date=([^/]+)/', 1)::DATE AS order_date,
    regexp_extract(source_file, 'region=([^/]+)/', 1) AS region
FROM numbered
"""

CLASSIFIED = """
CREATE TABLE classified AS
WITH parsed AS (
    -- The JSON functions raise on text that is not JSON: they only see the lines that are.
    SELECT *, CASE WHEN json_valid(line) THEN line END AS j FROM lines
), fields AS (
    SELECT
        *,
        CASE WHEN strlen(line) > $max_line_bytes THEN 'line_too_long' END AS defect,
        json_type(j) = 'OBJECT' AS is_object,
        trim(json_extract_string(j, '$.order_id')) AS order_id,
        trim(json_extract_string(j, '$.user_id')) AS user_id,
        TRY_CAST(trim(json_extract_string(j, '$.amount')) AS DECIMAL(18,4)) AS amount,
        json_extract_string(j, '$.currency') AS currency,
        trim(json_extract_string(j, '$.order_ts')) AS ts_text
    FROM parsed
), checked AS (
    SELECT
        *,
        CASE WHEN regexp_matches(ts_text, $iso_ts)
            THEN TRY_CAST(ts_text AS TIMESTAMPTZ) AT TIME ZONE 'UTC' END AS order_ts
    FROM fields
)
SELECT
    *,
    CASE
        WHEN defect IS NOT NULL THEN defect
        WHEN NOT coalesce(is_object, false) THEN 'malformed'
        WHEN coalesce(order_id, '') = '' THEN 'missing_order_id'
        WHEN coalesce(user_id, '') = '' THEN 'missing_user_id'
        WHEN amount IS NULL OR amount <= 0 OR amount > $max_amount THEN 'invalid_amount'
        WHEN currency IS NULL OR currency <> currencies[region] THEN 'invalid_currency'
        WHEN order_ts IS NULL THEN 'invalid_timestamp'
    END AS reason
FROM checked, (SELECT MAP($regions, $currencies) AS currencies)
"""

RANKED = """
CREATE TABLE ranked AS
SELECT
    *,
    row_number() OVER (
        PARTITION BY order_date, region, order_id
        ORDER BY order_ts DESC, source_file DESC, line_number DESC
    ) AS rank
FROM classified
WHERE reason IS NULL
"""

BRONZE = """
SELECT
    CASE WHEN defect = 'line_too_long' THEN left(line, $prefix) ELSE line END AS value,
    source_file,
    line_number,
    $run_id AS run_id,
    defect,
    CASE WHEN defect IS NOT NULL THEN strlen(line)::BIGINT END AS line_bytes,
    order_date,
    region
FROM classified
"""

ORDERS = """
SELECT
    order_id,
    user_id,
    amount,
    ranked.currency,
    order_ts,
    usd_per_unit AS fx_rate,
    round(amount * usd_per_unit, 2)::DECIMAL(18,2) AS amount_usd,
    $run_id AS run_id,
    ranked.order_date,
    region
FROM ranked JOIN fx USING (order_date, currency)
WHERE rank = 1
"""

QUARANTINE = """
SELECT reason, line AS raw, source_file, line_number, $run_id AS run_id, order_date, region
FROM classified WHERE reason IS NOT NULL
UNION ALL
SELECT 'duplicate', line, source_file, line_number, $run_id, order_date, region
FROM ranked WHERE rank > 1
"""

REVENUE = """
SELECT
    order_date,
    region,
    count(*) AS orders,
    count(DISTINCT user_id) AS users,
    sum(amount_usd)::DECIMAL(18,2) AS revenue_usd
FROM orders
GROUP BY order_date, region
"""


def main(argv: list[str] | None = None) -> int:
    from benchmarks.reference_inputs import dates_between, fx_rows, landing_files, parse_args

    args = parse_args(__doc__, argv)

    import duckdb

    from benchmarks.common import emit
    from regional_etl.contract import (
        LONG_LINE_PREFIX_BYTES,
        MAX_AMOUNT,
        MAX_LINE_BYTES,
        REGION_CURRENCY,
    )

    dates = dates_between(args.start, args.end)
    regions: list[str] = args.regions
    run_id = f"reference-duckdb-{uuid.uuid4()}"
    phases: dict[str, float] = {"imports": round(time.perf_counter() - T0, 3)}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        phases[name] = round(time.perf_counter() - mark, 3)
        mark = time.perf_counter()

    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")

    def write(query: str, table: str, partition_by: tuple[str, ...], **params: object) -> None:
        folder = args.warehouse / table
        folder.parent.mkdir(parents=True, exist_ok=True)
        for date in dates:
            for region in regions if "region" in partition_by else [None]:
                part = folder / f"order_date={date}"
                shutil.rmtree(part / f"region={region}" if region else part, ignore_errors=True)
        options = f"FORMAT parquet, PARTITION_BY ({', '.join(partition_by)}), OVERWRITE_OR_IGNORE"
        db.execute(
            f"COPY ({query}) TO '{folder}' ({options}, FILENAME_PATTERN 'part-{{uuid}}')", params
        )

    by_date, by_partition = ("order_date",), ("order_date", "region")
    db.execute("CREATE TABLE fx (order_date DATE, currency VARCHAR, usd_per_unit DECIMAL(20,10))")
    db.executemany("INSERT INTO fx VALUES (?, ?, ?)", fx_rows(dates))
    write("SELECT * FROM fx", "reference/fx_rates", by_date)
    lap("fx_rates")

    files = [str(p.absolute()) for p in landing_files(args.landing, dates, regions)]
    db.execute(LINES, {"files": files})
    db.execute(
        CLASSIFIED,
        {
            "max_line_bytes": MAX_LINE_BYTES,
            "iso_ts": ISO_TS,
            "max_amount": MAX_AMOUNT,
            "regions": list(REGION_CURRENCY),
            "currencies": list(REGION_CURRENCY.values()),
        },
    )
    write(
        BRONZE,
        "bronze/raw_orders",
        by_partition,
        run_id=run_id,
        prefix=LONG_LINE_PREFIX_BYTES,
    )
    lap("bronze")
    db.execute(RANKED)
    db.execute(f"CREATE TABLE orders AS {ORDERS}", {"run_id": run_id})
    write("SELECT * FROM orders", "silver/orders", by_partition)
    write(QUARANTINE, "silver/orders_quarantine", by_partition, run_id=run_id)
    lap("silver")
    write(REVENUE, "gold/daily_revenue", by_date)
    lap("gold")
    db.close()
    emit({"ok": True, "engine": "duckdb", "phases_s": phases, "regions": regions})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
