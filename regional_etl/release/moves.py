"""What the live tables did while a release was built, and what the release must do about it.

A release may be promoted only if, for every table and (date, region) partition, it holds
either its own rebuild of the partition (inside its range, rebuilt after the last live change
to it) or exactly the live data (outside its range: the live data at a version no live commit
to that partition has followed since the seed or the last catch-up). `moved` finds the
partitions where neither holds, from the Delta logs of both namespaces; it says so to a
person (`live_moves`); `catch_up` copies the live partitions outside the range again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from regional_etl.contract import DAILY_PARTITION_COLUMNS, Table, partition_columns
from regional_etl.io.delta import current_version, daily_predicate, regional_predicate
from regional_etl.partitions import DateRegion
from regional_etl.release.commits import (
    ABSENT,
    TABLES,
    CommitsGone,
    Partition,
    commits_after,
    describe,
    exists,
    last_commit_ms,
)
from regional_etl.release.pointer import ReleaseRefused, pointer_lock
from regional_etl.release.report import ReleaseDiff, read_report
from regional_etl.release.seeding import Seed, copy_live, read_seed, write_seed
from regional_etl.resources.warehouse import WarehouseResource

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass
class Moved:
    """Live partitions the release does not hold, per table: outside its range (the release
    holds an older live copy) and inside it (rebuilt before the live change, or changed in the
    live namespace after the diff)."""

    outside: dict[str, set[Partition]] = field(default_factory=dict)
    inside: dict[str, set[Partition]] = field(default_factory=dict)


def moved(
    warehouse: WarehouseResource,
    seed: Seed,
    dates: list[str],
    diffed: dict[str, int] | None = None,
) -> Moved:
    """The live partitions changed since the release last took them (`seed`); `diffed`, the
    live versions a diff read, marks every later live commit inside the range as unseen."""
    found = Moved()
    in_range = set(dates)
    for t in TABLES:
        name = t.value
        rebuilt = last_commit_ms(warehouse.table(t, seed.candidate), seed.versions[name])
        after_diff = (diffed or {}).get(name)
        for c in commits_after(warehouse.table(t, seed.live), seed.live_versions[name]):
            for p in c.partitions:
                if p.order_date not in in_range:
                    if c.version > seed.covers(name, str(p)):
                        found.outside.setdefault(name, set()).add(p)
                elif (after_diff is not None and c.version > after_diff) or (
                    c.timestamp_ms >= rebuilt.get(p, 0)
                ):
                    found.inside.setdefault(name, set()).add(p)
    return found


def live_moves(warehouse: WarehouseResource, seed: Seed | None, diff: ReleaseDiff) -> list[str]:
    """Why promoting the release now would hide live data, as refusals a person reads."""
    candidate = diff.candidate
    if seed is None:
        return [f"{candidate} was never seeded from the live tables: launch start_release"]
    if seed.live != diff.live:
        return [
            f"{candidate} was seeded from {seed.live}, the diff compared against {diff.live}: "
            "launch start_release again"
        ]
    try:
        found = moved(warehouse, seed, diff.dates, diff.live_versions)
    except CommitsGone as exc:
        return [str(exc)]

    def listed(by_table: dict[str, set[Partition]]) -> str:
        return "; ".join(f"{t}: {describe(ps)}" for t, ps in sorted(by_table.items()))

    out = []
    if found.outside:
        out.append(
            f"{diff.live} changed outside the release range since {candidate} took its data "
            f"({listed(found.outside)}): launch catch_up_release to copy them again, or "
            f"rebuild those dates in {candidate} and diff a range that covers them"
        )
    if found.inside:
        out.append(
            f"{diff.live} changed inside the release range after {candidate} rebuilt it or "
            f"after the diff ({listed(found.inside)}): materialize those partitions in "
            f"{candidate} again, then release_diff"
        )
    return out


def catch_up(spark: SparkSession, warehouse: WarehouseResource, run_id: str) -> Moved:
    """Copy again, at the live tables' current versions, the live partitions outside the range
    of the release's latest diff that changed since the release took them; record it in the
    seed. Returns what was copied (`outside`) and what only a rebuild can bring in (`inside`).
    Under the release lock, like the seed."""
    candidate = warehouse.slot
    what = f"catch-up of {candidate}"
    with pointer_lock(warehouse) as pointer:
        seed, diff = read_seed(warehouse, candidate), read_report(warehouse, candidate)
        if pointer.live == candidate:
            raise ReleaseRefused(what, [f"{candidate} is live"])
        if seed is None or seed.live != pointer.live:
            raise ReleaseRefused(what, [f"{candidate} is not seeded from {pointer.live}"])
        if diff is None:
            raise ReleaseRefused(what, ["no diff yet: its range says what is outside it"])
        try:
            found = moved(warehouse, seed, diff.dates)
        except CommitsGone as exc:
            raise ReleaseRefused(what, [str(exc)]) from exc
        copied = {t: dict(v) for t, v in seed.copied.items()}
        for name, partitions in sorted(found.outside.items()):
            table = Table(name)
            path = warehouse.table(table, seed.live)
            version = current_version(spark, path) if exists(path) else ABSENT
            copy_live(
                spark, warehouse, seed.live, table, version, _predicate(table, partitions), run_id
            )
            copied.setdefault(name, {}).update({str(p): version for p in partitions})
        write_seed(warehouse, replace(seed, copied=copied))
    return found


def _predicate(table: Table, partitions: set[Partition]) -> str:
    if partition_columns(table) == DAILY_PARTITION_COLUMNS:
        return daily_predicate(p.order_date for p in partitions)
    return regional_predicate(DateRegion(p.order_date, p.region or "") for p in partitions)
