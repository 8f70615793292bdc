"""Where the landing zone and the Delta warehouse live."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from regional_etl.contract import Table


class WarehouseResource(ConfigurableResource):
    """The landing-zone root (JSONL drops) and the warehouse root (Delta tables).

    Relative paths resolve against the working directory of the run process, which
    `workspace.yaml` sets to the project folder.
    """

    landing_root: str = Field(
        default="./data/landing",
        description="Root of the landing zone: region=<r>/date=<d>/*.jsonl plus _SUCCESS.",
    )
    warehouse_root: str = Field(
        default="./data/warehouse",
        description="Root under which every Delta table of the contract lives.",
    )

    def landing(self) -> Path:
        return Path(self.landing_root).resolve()

    def table(self, table: Table) -> str:
        return str(Path(self.warehouse_root).resolve() / table.value)
