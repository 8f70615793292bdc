"""Where the landing zone and the Delta warehouse live."""

from __future__ import annotations

import re
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from regional_etl.contract import Table
from regional_etl.io.warehouse import WarehousePaths, join

BLUE = "blue"
RELEASES_DIR = "releases"
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def is_live_location(namespace: str) -> bool:
    """Whether the code location writing `namespace` is the live one (blue: the schedules and
    sensors, no release jobs) rather than a release location, which builds a candidate."""
    return namespace == BLUE


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

    namespace: str = Field(
        default=BLUE,
        description="The release namespace this code location writes and reads: 'blue' is the "
        "warehouse root itself, any other name (a release, e.g. 'green') lives under "
        "<warehouse_root>/releases/<name>. Readers find the live one through the release "
        "pointer (regional_etl.release).",
    )

    def landing(self) -> Path:
        return Path(self.landing_root).resolve()

    def paths(self) -> WarehousePaths:
        """This location's namespace as plain paths, for the pipeline functions."""
        return WarehousePaths(self.landing(), self.namespace_root(self.namespace))

    def table(self, table: Table, namespace: str | None = None) -> str:
        """The path of a table in this location's namespace, or in another one."""
        return join(self.namespace_root(namespace or self.namespace), table.value)

    def namespace_root(self, namespace: str) -> str:
        if not _NAME.match(namespace):
            raise ValueError(f"release namespace {namespace!r}: expected [a-z][a-z0-9_-]*")
        # Blue is the root, so a warehouse from before releases is blue without moving data.
        if namespace == BLUE:
            return join(self.warehouse_root)
        return join(self.warehouse_root, RELEASES_DIR, namespace)

    def is_remote(self) -> bool:
        return "://" in self.warehouse_root
