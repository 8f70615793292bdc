"""Where one namespace's landing drops and Delta tables are, as plain paths: the pipeline
functions and the benchmarks take these, never a Dagster resource."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from regional_etl.contract import Table

if TYPE_CHECKING:
    from regional_etl.io.delta import CommitGuard


@dataclass(frozen=True)
class WarehousePaths:
    """The landing-zone root and the folder of one namespace's tables, and what every write to
    them holds around its commit (`replace_partitions`' guard; None: nothing)."""

    landing: Path
    root: str  # a resolved local path, or a URI (s3a://bucket/warehouse) passed to Spark as is
    commit_guard: CommitGuard | None = None

    def table(self, table: Table) -> str:
        return join(self.root, table.value)


def join(root: str, *parts: str) -> str:
    """A path under `root`: a URI is joined with '/', a local path resolved (the Spark server
    runs elsewhere and gets absolute paths)."""
    if "://" in root:
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(root).resolve().joinpath(*parts))
