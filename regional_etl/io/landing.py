"""The landing zone: which drops are complete, and reading their lines into Spark."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from regional_etl.contract import (
    LANDING_SUFFIX,
    MAX_LINE_BYTES,
    SUCCESS_MARKER,
    ContractError,
    drop_path,
)
from regional_etl.partitions import DateRegion

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class DropNotReadyError(RuntimeError):
    """A landing drop without its `_SUCCESS` marker: it may still be arriving."""


class LandingFileError(ValueError):
    """A landing file that cannot be ingested as delivered; the message names the file (relative
    to the landing root) and, where it is one line, the line."""


@dataclass(frozen=True)
class Drop:
    """One complete landing drop: its folder, data files and `_SUCCESS` time."""

    partition: DateRegion
    path: Path
    files: tuple[Path, ...]
    success_mtime_ns: int


def ready_drop(root: str | Path, partition: DateRegion) -> Drop:
    """The drop of one partition, or a `DropNotReadyError` that names the path."""
    path = drop_path(root, partition.order_date, partition.region)
    marker = path / SUCCESS_MARKER
    if not marker.is_file():
        what = "does not exist" if not path.exists() else f"has no {SUCCESS_MARKER} marker yet"
        raise DropNotReadyError(
            f"landing drop {path} for partition {partition} {what}: not ingesting a drop that "
            f"may be incomplete (the landing sensor runs it once {marker} is written)"
        )
    # Symlinks are listed even when dangling: `count_lines` then names them, rather than the
    # drop losing a file without a word.
    files = tuple(
        sorted(
            p
            for p in path.iterdir()
            if p.suffix == LANDING_SUFFIX and (p.is_file() or p.is_symlink())
        )
    )
    return Drop(partition, path, files, marker.stat().st_mtime_ns)


@dataclass
class LandingScan:
    """The complete drops under a landing root, and the folders that break the layout."""

    drops: list[Drop] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def scan_drops(root: str | Path) -> LandingScan:
    """Every complete drop under the landing root; folders that break the layout are returned
    as problems, so the caller can report them instead of silently ignoring them."""
    root = Path(root)
    scan = LandingScan()
    if not root.is_dir():
        return scan
    for region_dir in sorted(root.glob("region=*")):
        for date_dir in sorted(region_dir.glob("date=*")):
            if not (date_dir / SUCCESS_MARKER).is_file():
                continue
            region = region_dir.name.split("=", 1)[1]
            date = date_dir.name.split("=", 1)[1]
            try:
                partition = DateRegion(date, region)
            except ContractError as exc:
                scan.problems.append((date_dir, str(exc)))
                continue
            try:
                scan.drops.append(ready_drop(root, partition))
            except (DropNotReadyError, OSError):
                continue  # vanished or being rewritten between listing and stat: next scan
    return scan


def read_drops(spark: SparkSession, root: str | Path, drops: Sequence[Drop]) -> DataFrame:
    """All lines of the drops as bronze rows: value, source_file, line_number, order_date, region.

    Each file is read whole and split in the JVM, so line numbers are exact and no Python UDF
    touches the rows. A trailing newline does not make an extra line; a blank line in the middle
    of a file is a line (and will be quarantined as malformed).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    # Not resolved: a symlinked file's lines belong to the drop it sits in, and its source_file
    # (region and date) is read from this path.
    files = [str(f.absolute()) for d in drops for f in d.files]
    if not files:
        empty = T.StructType(
            [
                T.StructField("value", T.StringType()),
                T.StructField("source_file", T.StringType()),
                T.StructField("line_number", T.LongType()),
                T.StructField("order_date", T.DateType()),
                T.StructField("region", T.StringType()),
            ]
        )
        return spark.createDataFrame([], empty)
    raw = spark.read.text(files, wholetext=True)
    path = F.col("_metadata.file_path")
    # A UTF-8 byte order mark (Windows tools write one) marks the encoding; it is not content.
    text = F.regexp_replace(F.regexp_replace(F.col("value"), "^\ufeff", ""), r"\n$", "")
    lines = raw.select(
        F.posexplode(F.split(text, "\n")).alias("pos", "value"),
        path.alias("file_path"),
        F.length(F.col("value")).alias("file_length"),
    )
    # An empty file has no lines at all, not one empty line.
    lines = lines.where(F.col("file_length") > 0)
    drop_rel = F.regexp_extract("file_path", r"(region=[^/]+/date=[^/]+/[^/]+)$", 1)
    return lines.select(
        F.regexp_replace("value", r"\r$", "").alias("value"),
        drop_rel.alias("source_file"),
        (F.col("pos") + 1).cast("long").alias("line_number"),
        F.to_date(F.regexp_extract(drop_rel, r"date=([^/]+)/", 1)).alias("order_date"),
        F.regexp_extract(drop_rel, r"region=([^/]+)/", 1).alias("region"),
    )


def count_lines(drops: Sequence[Drop]) -> int:
    """Landing lines as the contract counts them (for reconciliation), without Spark.

    Also the gate a file passes before Spark reads it: one `LandingFileError` names every file
    (and line) that is not UTF-8, has a line over `MAX_LINE_BYTES`, leads outside the landing
    root through a symlink, or cannot be read (gone since the listing), so a range run with
    several broken drops reports them all at once.
    """
    total, problems = 0, []
    for drop in drops:
        root = drop.path.parent.parent
        for f in drop.files:
            try:
                total += _checked_line_count(f, root)
            except LandingFileError as exc:
                problems.append(str(exc))
    if problems:
        raise LandingFileError("; ".join(problems))
    return total


def _checked_line_count(path: Path, root: Path) -> int:
    name = path.relative_to(root).as_posix()
    target = path.resolve()
    if not target.is_relative_to(root.resolve()):
        raise LandingFileError(
            f"landing file {name} leads to {target}, outside the landing root {root}: not "
            "followed (a drop's files must live in the landing zone)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LandingFileError(
            f"landing file {name} could not be read ({exc.strerror or exc}): it vanished or "
            f"changed after the drop was listed; re-write {SUCCESS_MARKER} once the drop is "
            "complete"
        ) from exc
    if not data:
        return 0
    for number, line in enumerate(data.split(b"\n"), 1):
        if len(line) > MAX_LINE_BYTES:
            raise LandingFileError(
                f"landing file {name} line {number} is {len(line):,} bytes, longer than the "
                f"{MAX_LINE_BYTES:,}-byte limit of one order line: fix the drop"
            )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LandingFileError(
            f"landing file {name} line {line} is not UTF-8 (byte 0x{data[exc.start]:02x} at "
            f"offset {exc.start}): re-deliver the file in UTF-8"
        ) from None
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
