"""Blue-green releases: the live-release pointer, seeding, the data diff, promotion and rollback.

A release is the whole pipeline materialized by the release location into the slot readers do
not see (green while blue, the warehouse root, is live; blue while green is), beside the live
tables, which the live location keeps writing. Readers never name a namespace: they resolve
the pointer file `<warehouse>/_live_release.json` once per query (`live`) and read every table
of that query from the namespace it names; so does each run of the live location, when it
starts. Promotion and rollback rewrite that one file atomically, so a query sees all tables of
one release, never a mix. The pointer is a file, so the warehouse root must be a (shared) file
system path; the tables themselves are untouched by a promotion.

- `pointer`: the pointer, its lock, the live namespace for readers, both locations' guarded
  writes;
- `commits`: tables' Delta versions and the partitions that commits after a version touched;
- `seeding`: a release starts as a copy of the live tables at recorded versions;
- `moves`: the live partitions that changed while the release was built, and the catch-up;
- `diff` and `report`: the diff (Spark work in `transforms.release_diff`) and its report;
- `promotion`: the checks a switch must pass, promotion and rollback.
"""

from regional_etl.release.commits import table_versions
from regional_etl.release.diff import compute_diff
from regional_etl.release.moves import Moved, catch_up, live_moves, moved
from regional_etl.release.pointer import (
    CandidateWentLive,
    LiveNamespaceMoved,
    LiveRelease,
    Pointer,
    ReleaseRefused,
    live,
    live_commit,
    pointer_path,
    read_pointer,
    write_paths,
)
from regional_etl.release.promotion import RELEASE_PREFIX, gate_failures, promote, rollback
from regional_etl.release.report import (
    ReleaseDiff,
    ReleaseThresholds,
    read_report,
    report_path,
    write_report,
)
from regional_etl.release.seeding import Seed, read_seed, seed, seed_path
from regional_etl.transforms.release_diff import DIFF_KEYS

__all__ = [
    "DIFF_KEYS",
    "RELEASE_PREFIX",
    "CandidateWentLive",
    "LiveNamespaceMoved",
    "LiveRelease",
    "Moved",
    "Pointer",
    "ReleaseDiff",
    "ReleaseRefused",
    "ReleaseThresholds",
    "Seed",
    "catch_up",
    "compute_diff",
    "gate_failures",
    "live",
    "live_commit",
    "live_moves",
    "moved",
    "pointer_path",
    "promote",
    "read_pointer",
    "read_report",
    "read_seed",
    "report_path",
    "rollback",
    "seed",
    "seed_path",
    "table_versions",
    "write_paths",
    "write_report",
]
