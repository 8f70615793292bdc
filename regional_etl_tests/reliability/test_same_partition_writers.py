"""Scenario 4, same-partition writers: eight runs in processes of their own, at once, writing
identical and overlapping partitions of the same Delta tables. Afterwards every partition holds
the complete rows of exactly one run, nothing is lost or mixed, and each run's recorded
metadata (Delta version, rows) is its own commit, found by its run id in `userMetadata`."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from regional_etl.contract import REGIONS
from regional_etl.fx.server import FXServer
from regional_etl.generate import generate_landing
from regional_etl.io.delta import history
from regional_etl_tests.conftest import Pipeline
from regional_etl_tests.procs import process_groups
from regional_etl_tests.reliability.conftest import (
    judge,
    launcher_argv,
    launcher_env,
    table_rows,
)

DATE = "2024-03-08"
WRITERS = [
    # Four runs of one identical partition.
    *[("regional_orders_job", f"{DATE}|eu-west")] * 4,
    # Two range runs over all regions of the date: they overlap the four above and each other.
    *[("regional_orders_job", f"{DATE}|{REGIONS[0]}..{DATE}|{REGIONS[-1]}")] * 2,
    # Two runs of gold's partition of the date, which reads what the others write.
    *[("daily_revenue_job", DATE)] * 2,
]


def _range(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }


TABLES = ("bronze/raw_orders", "silver/orders", "silver/orders_quarantine", "gold/daily_revenue")


@pytest.mark.slow
def test_eight_runs_on_the_same_partitions_at_once(
    pipeline: Pipeline,
    instance: DagsterInstance,
    spark,
    pipeline_fx_server: FXServer,
) -> None:
    day = dt.date.fromisoformat(DATE)
    generate_landing(pipeline.landing, day, day, rows=40, seed=21, anomalies=True)
    # The tables and every upstream exist first, as they do in production: one run per job.
    every_region = _range(f"{DATE}|{REGIONS[0]}", f"{DATE}|{REGIONS[-1]}")
    for job, key, tags in (
        ("fx_rates_job", DATE, None),
        ("regional_orders_job", None, every_region),
        ("daily_revenue_job", DATE, None),
    ):
        job_def = pipeline.defs.resolve_job_def(job)
        assert job_def.execute_in_process(instance=instance, partition_key=key, tags=tags).success
    before = {r.run_id for r in instance.get_runs()}

    home = Path(instance.root_directory)
    argvs = [launcher_argv(pipeline, pipeline_fx_server.url, j, p) for j, p in WRITERS]
    with process_groups(
        *argvs, env=launcher_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as procs:
        outputs = [p.communicate(timeout=900) for p in procs]
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    runs = [instance.get_run_by_id(r["run_id"]) for r in results]
    assert {r.run_id for r in instance.get_runs()} - before == {r["run_id"] for r in results}
    failed = [r for r in runs if r is None or r.status != DagsterRunStatus.SUCCESS]

    # Each partition's rows come from one run, and are the complete rows of that run.
    mixed = 0
    for name in TABLES[:3]:  # gold has no run_id column: it is judged against the oracle
        writers = defaultdict(set)
        path = pipeline.warehouse / name
        frame = spark.read.format("delta").load(str(path))
        for row in frame.select("order_date", "region", "run_id").distinct().collect():
            writers[(row["order_date"], row["region"])].add(row["run_id"])
        mixed += sum(len(ids) > 1 for ids in writers.values())
    verdict = judge(spark, pipeline.landing, pipeline.warehouse, [(DATE, r) for r in REGIONS])

    # Every materialization's metadata names the commit its own run made: the version is a
    # commit tagged with the run's id, and its rows are that commit's rows (silver reports them
    # per partition, so they add up to the commit's).
    commits = {
        name: {c["version"]: c for c in history(spark, str(pipeline.warehouse / name)).collect()}
        for name in TABLES
    }
    recorded: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for run in runs:
        assert run is not None
        for event in instance.all_logs(run.run_id):
            mat = event.asset_materialization
            if mat is None or "delta_version" not in mat.metadata:
                continue
            table = str(mat.metadata["path"].value).split(str(pipeline.warehouse) + "/")[1]
            rows = mat.metadata.get("rows_written")
            recorded[(run.run_id, table, int(str(mat.metadata["delta_version"].value)))].extend(
                [] if rows is None else [int(str(rows.value))]
            )
    foreign = 0
    for (run_id, table, version), rows in recorded.items():
        commit = commits[table][version]
        written = int((commit["operationMetrics"] or {}).get("numOutputRows", 0))
        got = sum(rows) if table == "silver/orders" else (rows[0] if rows else written)
        if commit["userMetadata"] != run_id or got != written:
            foreign += 1
    checked = len(recorded)
    print(
        f"\n[reliability] same-partition writers: runs={len(runs)} failed={len(failed)} "
        f"mixed_partitions={mixed} metadata_checked={checked} foreign_metadata={foreign} "
        f"{verdict.summary()}"
    )
    for run, (_, err) in zip(runs, outputs, strict=True):
        if run is None or run.status != DagsterRunStatus.SUCCESS:
            print(err[-2000:])
    assert not failed, [(r.run_id, r.status) for r in failed if r]
    assert mixed == 0
    assert checked and foreign == 0
    assert verdict.ok, verdict.mismatches
    assert table_rows(spark, pipeline.warehouse, "gold/daily_revenue")
