"""The diff report a promotion is judged on (also `_release_diff.json` in the release's root), its
markdown for the UI, and the deployment's thresholds."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from regional_etl import settings
from regional_etl.contract import Table
from regional_etl.io.files import atomic_write
from regional_etl.resources.warehouse import WarehouseResource

REPORT_FILE = "_release_diff.json"


@dataclass(frozen=True)
class ReleaseThresholds:
    """How far a release's data may move from the live tables and still be promoted.

    The deployment's, not a run's: `from_settings` reads them when the promotion runs, so no
    launchpad can loosen them, and the pointer's history records the ones a switch passed.
    """

    # Most orders added, removed or changed (any column) over the whole range.
    max_changed_orders: int = 1000
    # Largest revenue difference of one date, in USD: the sum over regions of |release - live|,
    # so revenue moved between regions counts too.
    max_revenue_diff_usd: float = 1000.0

    @classmethod
    def from_settings(cls) -> ReleaseThresholds:
        """REGIONAL_ETL_RELEASE_MAX_CHANGED_ORDERS and ..._MAX_REVENUE_DIFF_USD, as set now."""
        return cls(
            max_changed_orders=int(_number(settings.RELEASE_MAX_CHANGED_ORDERS, int)),
            max_revenue_diff_usd=float(_number(settings.RELEASE_MAX_REVENUE_DIFF_USD, float)),
        )

    def violations(self, diff: ReleaseDiff) -> list[str]:
        found = []
        if diff.changed_orders > self.max_changed_orders:
            found.append(
                f"{diff.changed_orders} orders added, removed or changed, more than "
                f"max_changed_orders={self.max_changed_orders}"
            )
        limit = Decimal(str(self.max_revenue_diff_usd))
        for date, usd in sorted(diff.revenue_diff_by_date().items()):
            if usd > limit:
                found.append(
                    f"{date}: revenue differs by {usd} USD, more than "
                    f"max_revenue_diff_usd={self.max_revenue_diff_usd}"
                )
        return found


def _number(setting: settings.Setting, kind: type[int] | type[float]) -> int | float:
    raw = setting.get()
    try:
        return kind(raw or "")
    except ValueError:
        raise ValueError(f"{setting.name}={raw!r}: expected a {kind.__name__}") from None


@dataclass
class ReleaseDiff:
    """What a release changes against the live tables over its dates; also the report file."""

    live: str
    candidate: str
    dates: list[str]
    # table, order_date, region, live_rows, release_rows, only_live, only_release, changed,
    # changed_columns ({column: keys whose value differs})
    tables: list[dict[str, Any]]
    # order_date, region, live_usd, release_usd, diff_usd (decimal strings)
    revenue: list[dict[str, str]]
    # Delta version of each candidate table when diffed: a promotion checks it is still so.
    versions: dict[str, int]
    run_id: str
    computed_at: str
    # Delta version of each live table the diff read: a promotion refuses if they moved since.
    live_versions: dict[str, int] = field(default_factory=dict)

    @property
    def changed_orders(self) -> int:
        return sum(
            r["only_live"] + r["only_release"] + r["changed"]
            for r in self.tables
            if r["table"] == Table.ORDERS.value
        )

    def revenue_diff_by_date(self) -> dict[str, Decimal]:
        by_date = dict.fromkeys(self.dates, Decimal(0))
        for r in self.revenue:
            by_date[r["order_date"]] += abs(Decimal(r["diff_usd"]))
        return by_date

    def markdown(self) -> str:
        lines = [
            f"**{self.candidate}** against live **{self.live}**, "
            f"{self.dates[0]} .. {self.dates[-1]}: {self.changed_orders} orders added, removed "
            "or changed.",
            "",
            "| table | rows live | rows release | only live | only release | changed | columns |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        totals: dict[str, list[int]] = {}
        columns: dict[str, dict[str, int]] = {}
        for r in self.tables:
            t = totals.setdefault(r["table"], [0] * 5)
            for i, k in enumerate(("live_rows", "release_rows", "only_live", "only_release")):
                t[i] += r[k]
            t[4] += r["changed"]
            for c, n in r["changed_columns"].items():
                columns.setdefault(r["table"], {}).setdefault(c, 0)
                columns[r["table"]][c] += n
        for name, t in totals.items():
            cols = ", ".join(f"{c} ({n})" for c, n in sorted(columns.get(name, {}).items()))
            lines.append(f"| {name} | " + " | ".join(map(str, t)) + f" | {cols} |")
        lines += [
            "",
            "| date | revenue difference, USD (sum of abs over regions) |",
            "| --- | ---: |",
        ]
        lines += [f"| {d} | {usd} |" for d, usd in sorted(self.revenue_diff_by_date().items())]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReleaseDiff:
        return cls(**json.loads(text))


def report_path(warehouse: WarehouseResource, namespace: str) -> Path:
    return Path(warehouse.namespace_root(namespace)) / REPORT_FILE


def read_report(warehouse: WarehouseResource, namespace: str) -> ReleaseDiff | None:
    path = report_path(warehouse, namespace)
    return ReleaseDiff.from_json(path.read_text()) if path.exists() else None


def write_report(warehouse: WarehouseResource, diff: ReleaseDiff) -> Path:
    path = report_path(warehouse, diff.candidate)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, diff.to_json())
    return path
