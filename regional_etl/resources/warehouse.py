"""Where the landing zone and the Delta warehouse live."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from regional_etl.contract import Table


class WarehouseResource(ConfigurableResource):
    """The landing-zone root (JSONL drops) and the warehouse root (Delta tables).

    Relative paths resolve against the working directory of the run process, which
    `workspace.yaml` sets to the project folder: the Spark server, which runs elsewhere, gets
    absolute paths. A warehouse URI (s3a://, abfss://, gs://) is passed to Spark as it is; the
    landing zone is read by this process too, so it is a (shared) file system path.
    """

    landing_root: str = Field(
        default="./data/landing",
        description="Root of the landing zone: region=<r>/date=<d>/*.jsonl plus _SUCCESS.",
    )
    warehouse_root: str = Field(
        default="./data/warehouse",
        description="Root under which every Delta table of the contract lives: a path, or a "
        "URI the Spark cluster can write (s3a://bucket/warehouse).",
    )

    def landing(self) -> Path:
        return Path(self.landing_root).resolve()

    def table(self, table: Table) -> str:
        if "://" in self.warehouse_root:
            return f"{self.warehouse_root.rstrip('/')}/{table.value}"
        return str(Path(self.warehouse_root).resolve() / table.value)
