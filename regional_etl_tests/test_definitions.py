"""The code location: it loads, its asset graph is what the contract promises (a snapshot, so a
rename or a lost dependency fails here), and importing it starts no JVM."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions, MultiPartitionsDefinition, validate_run_config

from regional_etl.definitions import defs
from regional_etl.partitions import daily_partitions, date_region_partitions

GRAPH = {
    "fx_rates": ("daily", set()),
    "raw_orders": ("date x region", {"fx_rates"}),
    "orders": ("date x region", {"raw_orders", "fx_rates"}),
    "orders_quarantine": ("date x region", {"raw_orders"}),
    "daily_revenue": ("daily", {"orders"}),
}
# The release location adds its tooling.
RELEASE_GRAPH = {**GRAPH, "release_diff": ("None", set())}
CHECKS = {
    "raw_orders": {"delivered_by_deadline"},
    "orders": {
        "ids_not_null",
        "order_id_unique",
        "volume",
        "schema",
        "amounts_valid",
        "reconciliation",
        "quarantine_ratio",
    },
    "daily_revenue": {"all_regions_present", "totals_match_orders"},
}


def test_definitions_load() -> None:
    Definitions.validate_loadable(defs)
    assert {j.name for j in defs.jobs or []} >= {
        "fx_rates_job",
        "regional_orders_job",
        "daily_revenue_job",
    }


def test_asset_graph_snapshot() -> None:
    graph = defs.resolve_asset_graph()
    got = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        parts = node.partitions_def
        kind = (
            "date x region"
            if isinstance(parts, MultiPartitionsDefinition)
            else "daily"
            if parts == daily_partitions
            else repr(parts)
        )
        got[key.to_user_string()] = (kind, {p.to_user_string() for p in node.parent_keys})
    assert got == GRAPH
    assert graph.get(AssetKey("orders")).partitions_def == date_region_partitions
    checks: dict[str, set[str]] = {}
    for check_key in graph.asset_check_keys:
        checks.setdefault(check_key.asset_key.to_user_string(), set()).add(check_key.name)
    assert checks == CHECKS


def test_everything_the_live_location_shows_launches_as_one_date_range() -> None:
    """What "Materialize all" needs to offer a date range over the whole live location, and
    what Dagster checks when it turns that range into one asset backfill: a single root
    partitions definition (daily), and no asset or job that needs run config."""
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    roots = {k for k in keys if not graph.get(k).parent_keys & keys}
    assert {graph.get(k).partitions_def for k in roots} == {daily_partitions}
    for job in defs.resolve_all_job_defs():
        # A launch with empty run config must validate: no required field anywhere.
        assert validate_run_config(job, {}), job.name
        assert "release_thresholds" not in job.resource_defs, job.name
    assert not {"start_release", "promote_release", "rollback_release"} & {
        j.name for j in defs.resolve_all_job_defs()
    }


def test_every_asset_and_resource_is_described() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, f"{key.to_user_string()} has no description"
    for name, resource in (defs.resources or {}).items():
        assert type(resource).__doc__, f"resource {name} has no docstring"


def test_importing_the_code_location_starts_no_jvm_and_no_spark_server(tmp_path: Path) -> None:
    probe = textwrap.dedent(
        """
        import os
        import regional_etl.definitions
        from regional_etl_tests.procs import java_children
        print(java_children(os.getpid()) == [], os.listdir(os.environ["STATE"]) == [])
        """
    )
    state = tmp_path / "spark-state"
    state.mkdir()
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],  # so the probe imports regional_etl_tests
        env={**os.environ, "STATE": str(state), "REGIONAL_ETL_SPARK_STATE_DIR": str(state)},
    )
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_only_the_settings_module_reads_the_environment() -> None:
    package = Path(__file__).resolve().parents[1] / "regional_etl"
    readers = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if path.name != "settings.py"
        and any(word in path.read_text() for word in ("os.environ", "getenv("))
    ]
    assert readers == [], "read the environment through regional_etl/settings.py"


def test_warehouse_paths_are_absolute_and_uris_pass_through() -> None:
    from regional_etl.contract import Table
    from regional_etl.resources.warehouse import WarehouseResource

    local = WarehouseResource(warehouse_root="./data/warehouse").table(Table.ORDERS)
    assert local == str(Path("./data/warehouse").resolve() / "silver" / "orders")
    remote = WarehouseResource(warehouse_root="s3a://bucket/wh/").table(Table.ORDERS)
    assert remote == "s3a://bucket/wh/silver/orders"

    green = WarehouseResource(warehouse_root="s3a://bucket/wh/", namespace="green")
    assert green.table(Table.ORDERS) == "s3a://bucket/wh/releases/green/silver/orders"
    assert WarehouseResource(warehouse_root="/wh").table(Table.ORDERS, "green") == (
        "/wh/releases/green/silver/orders"
    )


def test_the_release_location_loads_beside_the_live_one_with_its_own_keys() -> None:
    """The live and the release location in one workspace: no asset key, or gate, of one is
    the other's, and neither names a slot: which of blue and green each writes is resolved from
    the release pointer when a run starts."""
    from regional_etl.definitions_release import defs as candidate

    Definitions.validate_loadable(candidate)
    live_keys = defs.resolve_asset_graph().get_all_asset_keys()
    release_keys = candidate.resolve_asset_graph().get_all_asset_keys()
    assert {k.to_user_string() for k in release_keys} == {f"release/{k}" for k in RELEASE_GRAPH}
    assert not live_keys & release_keys
    assert candidate.resolve_job_def("regional_orders_job").asset_layer.executable_asset_keys == {
        AssetKey(["release", n]) for n in ("raw_orders", "orders", "orders_quarantine")
    }
    # A release is built by a backfill of its range: no sensor or schedule starts its runs.
    assert not list(candidate.sensors or []) and not list(candidate.schedules or [])
    release_jobs = {"start_release", "catch_up_release", "promote_release", "rollback_release"}
    assert release_jobs <= {j.name for j in candidate.resolve_all_job_defs()}
    assert (defs.resources or {})["warehouse"].namespace == "live"
    assert (candidate.resources or {})["warehouse"].namespace == "next"


def test_the_release_diff_config_the_docs_give_is_what_dagster_accepts() -> None:
    """docs/releases.md's run config for the diff, pasted into the launchpad as it stands; a range
    ending before it starts names the config fields the user typed, not CLI flags."""
    import re

    import yaml

    from regional_etl.definitions_release import defs as candidate
    from regional_etl.partitions import date_range

    docs = (Path(__file__).resolve().parents[1] / "docs" / "releases.md").read_text()
    (snippet,) = re.findall(r"`(ops: \{release_diff: .*?\}\}\})`", docs)
    job = candidate.get_repository_def().get_implicit_job_def_for_assets(
        [AssetKey(["release", "release_diff"])]
    )
    assert job is not None
    assert validate_run_config(job, yaml.safe_load(snippet)), snippet
    names = ("config start", "config end")
    with pytest.raises(ValueError, match="config end 2024-03-01 is before config start 2024-03-30"):
        date_range("2024-03-30", "2024-03-01", names=names)
