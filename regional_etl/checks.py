"""The quality gates: asset checks on `orders` and `daily_revenue`, their verdicts on the
numbers of `transforms.gates`, and their results per partition (also inside a range run)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    ConfigurableResource,
    MetadataValue,
    Output,
    PartitionsDefinition,
)
from pydantic import Field

from regional_etl import dagster_private
from regional_etl.contract import REGIONS
from regional_etl.transforms.gates import PartitionStats

ERROR, WARN = AssetCheckSeverity.ERROR, AssetCheckSeverity.WARN


class QualityGateResource(ConfigurableResource):
    """Thresholds of the quality gates on `orders`."""

    min_rows: int = Field(
        default=1_000, description="Fewest orders a (date, region) partition may publish."
    )
    max_rows: int = Field(
        default=10_000_000, description="Most orders a (date, region) partition may publish."
    )
    max_quarantine_ratio: float = Field(
        default=0.05,
        description="Largest share of landing lines that may be quarantined before the "
        "quarantine-ratio check warns.",
    )
    block_quarantine_ratio: float = Field(
        default=0.5,
        description="Share of landing lines quarantined above which the quarantine-ratio check "
        "fails as an error and the partition is not published: its drop is mostly not orders "
        "(a broken export), caught by the gate rather than by a crash.",
    )


@dataclass(frozen=True)
class Gate:
    name: str
    description: str
    severity: AssetCheckSeverity = ERROR

    @property
    def blocking(self) -> bool:
        # A failed ERROR gate keeps the partition out of silver and gold; a WARN one only tells.
        return self.severity == ERROR

    def spec(self, asset: str, partitions_def: PartitionsDefinition | None) -> AssetCheckSpec:
        return AssetCheckSpec(
            self.name,
            asset=asset,
            description=self.description,
            blocking=self.blocking,
            partitions_def=partitions_def,
        )


@dataclass(frozen=True)
class Verdict:
    gate: Gate
    passed: bool
    metadata: dict[str, Any]
    # A WARN gate's verdict raised to ERROR (the quarantine ratio of a mostly broken drop).
    severity: AssetCheckSeverity | None = None

    @property
    def blocks(self) -> bool:
        return (self.severity or self.gate.severity) == ERROR and not self.passed


ORDERS_GATES = {
    g.name: g
    for g in [
        Gate("ids_not_null", "No published order has a null or blank order_id or user_id."),
        Gate("order_id_unique", "order_id is unique within the (date, region) partition."),
        Gate("volume", "The partition publishes between min_rows and max_rows orders."),
        Gate("schema", "The published columns and types equal the data contract."),
        Gate("amounts_valid", "Every published amount is positive and finite, with a USD value."),
        Gate(
            "reconciliation",
            "landing lines = bronze rows = orders + quarantine rows: nothing lost or invented.",
        ),
        Gate(
            "quarantine_ratio",
            "At most max_quarantine_ratio of the landing lines are quarantined (warns); over "
            "block_quarantine_ratio the drop is mostly not orders and is not published.",
            WARN,
        ),
    ]
}
REVENUE_GATES = {
    g.name: g
    for g in [
        Gate("all_regions_present", "All four regions of the date have a revenue row."),
        Gate("totals_match_orders", "Orders, users and revenue equal silver/orders of the date."),
    ]
}


def orders_verdicts(
    stats: PartitionStats, schema_problems: list[str], gates: QualityGateResource
) -> list[Verdict]:
    """Every gate on one partition's numbers. Pure: the tests call it on hand-made stats."""
    s = stats
    g = ORDERS_GATES
    return [
        Verdict(
            g["ids_not_null"],
            s.null_order_id == 0 and s.null_user_id == 0,
            {"null_order_id": s.null_order_id, "null_user_id": s.null_user_id},
        ),
        Verdict(
            g["order_id_unique"],
            s.duplicate_order_ids == 0,
            {"duplicate_order_ids": s.duplicate_order_ids, "orders": s.orders},
        ),
        Verdict(
            g["volume"],
            gates.min_rows <= s.orders <= gates.max_rows,
            {"orders": s.orders, "min_rows": gates.min_rows, "max_rows": gates.max_rows},
        ),
        Verdict(
            g["schema"],
            not schema_problems,
            {"problems": MetadataValue.json(schema_problems)},
        ),
        Verdict(
            g["amounts_valid"],
            s.bad_amounts == 0 and s.missing_fx == 0,
            {"bad_amounts": s.bad_amounts, "missing_fx_rate": s.missing_fx},
        ),
        Verdict(
            g["reconciliation"],
            s.landing_lines == s.lines == s.orders + s.quarantined,
            {
                "landing_lines": s.landing_lines,
                "bronze_rows": s.lines,
                "orders": s.orders,
                "quarantined": s.quarantined,
                "unaccounted": s.landing_lines - s.orders - s.quarantined,
            },
        ),
        Verdict(
            g["quarantine_ratio"],
            s.quarantine_ratio <= gates.max_quarantine_ratio,
            {
                "quarantine_ratio": MetadataValue.float(round(s.quarantine_ratio, 6)),
                "max_quarantine_ratio": MetadataValue.float(gates.max_quarantine_ratio),
                "block_quarantine_ratio": MetadataValue.float(gates.block_quarantine_ratio),
                "quarantined": s.quarantined,
            },
            ERROR if s.quarantine_ratio > gates.block_quarantine_ratio else None,
        ),
    ]


# (orders, users, revenue_usd) of one daily_revenue row, by region.
RevenueByRegion = Mapping[str, tuple[int, int, Any]]


def revenue_usd(by_region: RevenueByRegion) -> float:
    """The date's revenue over its regions."""
    return float(sum((v[2] for v in by_region.values()), start=0))


def revenue_verdicts(expected: RevenueByRegion, written: RevenueByRegion | None) -> list[Verdict]:
    """Every gate on one date of `daily_revenue`: `expected` aggregated from silver, `written`
    read back from the commit (None: the date was not written). Pure, like `orders_verdicts`."""
    missing = sorted(set(REGIONS) - set(expected))
    g = REVENUE_GATES
    verdicts = [
        Verdict(
            g["all_regions_present"],
            not missing,
            {"missing_regions": MetadataValue.json(missing), "regions": len(expected)},
        )
    ]
    if written is not None:
        diffs = {
            region: {"gold": str(written.get(region)), "orders": str(want)}
            for region, want in expected.items()
            if written.get(region) != want
        }
        verdicts.append(
            Verdict(
                g["totals_match_orders"],
                not diffs and len(written) == len(REGIONS),
                {"differences": MetadataValue.json(diffs), "revenue_usd": revenue_usd(expected)},
            )
        )
    return verdicts


def schema_problems(actual: Any, expected: Any) -> list[str]:
    """Differences between two Spark StructTypes by column name and type (order included)."""
    columns = [(f.name, f.dataType.simpleString()) for f in actual.fields]
    contract = [(f.name, f.dataType.simpleString()) for f in expected.fields]
    if columns == contract:
        return []
    types, contract_types = dict(columns), dict(contract)
    problems = [f"missing column {n} {t}" for n, t in contract if n not in types]
    problems += [f"unexpected column {n} {t}" for n, t in columns if n not in contract_types]
    problems += [
        f"column {n} is {types[n]}, contract says {t}"
        for n, t in contract
        if n in types and types[n] != t
    ]
    return problems or [f"column order differs: {[n for n, _ in columns]}"]


def step_asset_key(context: AssetExecutionContext, name: str) -> AssetKey:
    """The key of this step's asset called `name`: a release code location prefixes every key
    with its prefix (release/orders), so asset bodies never spell a key themselves."""
    [key] = [k for k in context.assets_def.keys if k.path[-1] == name]
    return key


def partition_check_results(
    context: AssetExecutionContext, asset: str, verdicts: Mapping[str, Iterable[Verdict]]
) -> Iterator[AssetCheckEvaluation | Output]:
    """The check results of every partition of the step (`verdicts` by partition key), each on
    its own partition and aimed at that partition's latest materialization, then the step's
    check outputs. Emit the materializations first: a blocked partition has none to aim at.

    Dagster 1.13 has no public API for this: `AssetCheckResult` takes no partition (it reports on
    the step's single partition key, and on none inside a range run), and the target of an
    `AssetCheckEvaluation` is of a type that is not exported. Without a target, Dagster takes the
    result for a stale one and `all_deps_blocking_checks_passed` never passes. Both private
    uses are in `dagster_private`, whose test fails when Dagster moves them.
    """
    asset_key = step_asset_key(context, asset)
    for partition, partition_verdicts in verdicts.items():
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
        ).records
        target = (
            dagster_private.materialization_target(
                run_id=records[0].event_log_entry.run_id,
                storage_id=records[0].storage_id,
                timestamp=records[0].timestamp,
            )
            if records
            else None
        )
        for v in partition_verdicts:
            yield AssetCheckEvaluation(
                asset_key=asset_key,
                check_name=v.gate.name,
                passed=v.passed,
                metadata={"partition": partition, **v.metadata},
                target_materialization_data=target,
                severity=v.severity or v.gate.severity,
                blocking=v.gate.blocking,
                partition=partition,
                description=v.gate.description,
            )
    for key in context.selected_asset_check_keys:
        yield Output(None, output_name=dagster_private.check_output_name(context.assets_def, key))
