"""The landing zone: which drops are complete, and reading their lines into Spark."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from regional_etl.contract import (
    LANDING_SUFFIX,
    LONG_LINE_PREFIX_BYTES,
    MAX_LINE_BYTES,
    SUCCESS_MARKER,
    ContractError,
    Reason,
    drop_path,
)
from regional_etl.partitions import DateRegion

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class DropNotReadyError(RuntimeError):
    """A landing drop without its `_SUCCESS` marker: it may still be arriving."""


class LandingFileError(ValueError):
    """A landing file that cannot be read at all; the message names the file (relative to the
    landing root)."""


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
    # Everything named like a data file, dangling links and folders too: `scan_drop` then names
    # what cannot be read, rather than the drop losing a file without a word.
    files = tuple(sorted(p for p in path.iterdir() if p.suffix == LANDING_SUFFIX))
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


def read_drops(
    spark: SparkSession,
    root: str | Path,
    drops: Sequence[Drop],
    defects: Sequence[LineDefect] | None = None,
) -> DataFrame:
    """All lines of the drops as bronze rows: value, source_file, line_number, defect,
    line_bytes, order_date, region.

    Each file is read whole and split in the JVM, so line numbers are exact and no Python UDF
    touches the rows. A trailing newline does not make an extra line; a blank line in the middle
    of a file is a line (and will be quarantined as malformed). The lines of `defects` (found by
    `scan_drop`, which runs here when they are not given) keep what `LineDefect.value` says
    instead of their bytes, so no table ever holds a value that is not UTF-8.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if defects is None:
        defects = [d for drop in drops for d in scan_drop(drop).defects]
    # Not resolved: a symlinked file's lines belong to the drop it sits in, and its source_file
    # (region and date) is read from this path.
    files = [str(f.absolute()) for d in drops for f in d.files]
    if not files:
        empty = T.StructType(
            [
                T.StructField("value", T.StringType()),
                T.StructField("source_file", T.StringType()),
                T.StructField("line_number", T.LongType()),
                T.StructField("defect", T.StringType()),
                T.StructField("line_bytes", T.LongType()),
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
    lines = lines.select(
        F.regexp_replace("value", r"\r$", "").alias("value"),
        drop_rel.alias("source_file"),
        (F.col("pos") + 1).cast("long").alias("line_number"),
        F.to_date(F.regexp_extract(drop_rel, r"date=([^/]+)/", 1)).alias("order_date"),
        F.regexp_extract(drop_rel, r"region=([^/]+)/", 1).alias("region"),
    )
    if not defects:
        return lines.select(
            "value",
            "source_file",
            "line_number",
            F.lit(None).cast("string").alias("defect"),
            F.lit(None).cast("long").alias("line_bytes"),
            "order_date",
            "region",
        )
    found = spark.createDataFrame(
        [(d.source_file, d.line_number, d.reason.value, d.line_bytes, d.value) for d in defects],
        "source_file string, line_number long, defect string, line_bytes long, kept string",
    )
    # Spark names a file by its URI path (a space comes as %20, a '%' as %25, a '+' stays):
    # matched by the name as the file system spells it, which is what `scan_drop` has.
    plain_name = F.url_decode(F.regexp_replace(lines["source_file"], r"\+", "%2B"))
    keys = [plain_name == found["source_file"], lines["line_number"] == found["line_number"]]
    joined = lines.join(F.broadcast(found), keys, "left").select(
        lines["value"],
        lines["source_file"],
        lines["line_number"],
        found["defect"],
        found["line_bytes"],
        found["kept"],
        lines["order_date"],
        lines["region"],
    )
    return joined.select(
        F.when(F.col("defect").isNull(), F.col("value")).otherwise(F.col("kept")).alias("value"),
        "source_file",
        "line_number",
        "defect",
        "line_bytes",
        "order_date",
        "region",
    )


@dataclass(frozen=True)
class LineDefect:
    """A landing line that is not kept as delivered: its reason (a `LINE_DEFECTS` reason), its
    length in bytes as delivered, and the text bronze keeps of it."""

    source_file: str
    line_number: int
    reason: Reason
    line_bytes: int
    value: str


@dataclass(frozen=True)
class DropScan:
    """A drop's lines as the contract counts them, and the lines that are not kept as
    delivered."""

    drop: Drop
    lines: int
    defects: tuple[LineDefect, ...]


def scan_drop(drop: Drop) -> DropScan:
    """Count a drop's lines and find its line defects, without Spark.

    A line-level problem (not UTF-8, longer than MAX_LINE_BYTES) is a `LineDefect`: the line is
    quarantined and the rest of the drop flows. A file that cannot be read at all (a dangling
    link, a link leading outside the landing root, a folder named like a file, an I/O error)
    raises one `LandingFileError` naming every such file of the drop: it fails the drop's
    partition, and only that partition.
    """
    root = drop.path.parent.parent
    lines, defects, problems = 0, [], []
    for f in drop.files:
        try:
            data = _read_landing_file(f, root)
        except LandingFileError as exc:
            problems.append(str(exc))
            continue
        name = f.relative_to(root).as_posix()
        # The byte order mark is not content (`read_drops` drops it too).
        file_lines = _split_lines(data.removeprefix(b"\xef\xbb\xbf"))
        lines += len(file_lines)
        defects.extend(_line_defects(name, file_lines))
    if problems:
        raise LandingFileError("; ".join(problems))
    return DropScan(drop, lines, tuple(defects))


def count_lines(drops: Sequence[Drop]) -> int:
    """Landing lines of the drops as the contract counts them (for reconciliation)."""
    return sum(scan_drop(d).lines for d in drops)


def _read_landing_file(path: Path, root: Path) -> bytes:
    name = path.relative_to(root).as_posix()
    target = path.resolve()
    if not target.is_relative_to(root.resolve()):
        raise LandingFileError(
            f"landing file {name} leads to {target}, outside the landing root {root}: not "
            "followed (a drop's files must live in the landing zone)"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LandingFileError(
            f"landing file {name} could not be read ({exc.strerror or exc}): it vanished or "
            f"changed after the drop was listed, or is not a file; re-write {SUCCESS_MARKER} "
            "once the drop is complete"
        ) from exc


def _split_lines(data: bytes) -> list[bytes]:
    """The file's lines as `read_drops` numbers them: a trailing newline ends the last line
    rather than starting an empty one, and an empty file has none."""
    if not data:
        return []
    parts = data.split(b"\n")
    return parts[:-1] if data.endswith(b"\n") else parts


def _line_defects(name: str, lines: list[bytes]) -> list[LineDefect]:
    defects = []
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE_BYTES:
            # Cut on a character boundary: a multi-byte character split by the cut is dropped.
            prefix = line[:LONG_LINE_PREFIX_BYTES].decode("utf-8", errors="ignore")
            defects.append(LineDefect(name, number, Reason.LINE_TOO_LONG, len(line), prefix))
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("utf-8", errors="replace").removesuffix("\r")
            defects.append(LineDefect(name, number, Reason.INVALID_ENCODING, len(line), text))
    return defects
