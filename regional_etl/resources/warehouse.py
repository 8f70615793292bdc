"""Where the landing zone and the Delta warehouse live."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from regional_etl.contract import Table
from regional_etl.io.warehouse import WarehousePaths, join

# The two slots that releases alternate between: blue is the warehouse root itself (a warehouse
# from before releases is blue without moving data), green lives under releases/green.
BLUE, GREEN = "blue", "green"
# What a code location writes, resolved from the release pointer when a run starts: the slot
# readers see (the live location), or the other one (the release location).
LIVE, NEXT = "live", "next"
RELEASES_DIR = "releases"
# The release pointer, at the warehouse root: {"live": <namespace>, ...} (regional_etl.release).
POINTER_FILE = "_live_release.json"
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


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
        default=LIVE,
        description="Which namespace this code location writes and reads: 'live' (the slot the "
        "release pointer names, blue or green: the live location), 'next' (the other slot: "
        "the release location), each resolved when a run starts; or one fixed namespace "
        "('blue' is the warehouse root, any other name lives under "
        "<warehouse_root>/releases/<name>).",
    )

    # The slot resolved for this run (`setup_for_execution`); outside a run, resolved per use.
    _slot: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # Once per run: every step and table of a run is in one slot even if a promotion
        # switches readers meanwhile (the commit guard then refuses the run's late commits).
        self._slot = self.resolve_slot()

    @property
    def slot(self) -> str:
        """The namespace this location writes and reads now."""
        return self._slot or self.resolve_slot()

    def resolve_slot(self) -> str:
        if self.namespace not in (LIVE, NEXT):
            return self.namespace
        live = self.live_namespace()
        if self.namespace == LIVE:
            return live
        return BLUE if live == GREEN else GREEN

    def writes_live(self) -> bool:
        """Whether this is the live location (it writes what readers see) rather than a release
        location building a candidate. A fixed 'blue' is the live location of a warehouse
        before releases."""
        return self.namespace in (LIVE, BLUE)

    def live_namespace(self) -> str:
        """The namespace readers see: the pointer's, blue without one (or on a remote
        warehouse, which has no pointer file)."""
        if self.is_remote():
            return BLUE
        pointer = Path(self.namespace_root(BLUE)) / POINTER_FILE
        return json.loads(pointer.read_text())["live"] if pointer.exists() else BLUE

    def landing(self) -> Path:
        return Path(self.landing_root).resolve()

    def paths(self) -> WarehousePaths:
        """This location's namespace as plain paths, for the pipeline functions."""
        return WarehousePaths(self.landing(), self.namespace_root(self.slot))

    def table(self, table: Table, namespace: str | None = None) -> str:
        """The path of a table in this location's namespace, or in another one."""
        return join(self.namespace_root(namespace or self.slot), table.value)

    def namespace_root(self, namespace: str) -> str:
        if not _NAME.match(namespace):
            raise ValueError(f"release namespace {namespace!r}: expected [a-z][a-z0-9_-]*")
        # Blue is the root, so a warehouse from before releases is blue without moving data.
        if namespace == BLUE:
            return join(self.warehouse_root)
        return join(self.warehouse_root, RELEASES_DIR, namespace)

    def is_remote(self) -> bool:
        return "://" in self.warehouse_root
