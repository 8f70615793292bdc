"""Writing a whole file so that a reader sees the old content or the new, never a part."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write(path: Path, content: str | bytes, *, durable: bool = False) -> None:
    """Replace `path` with `content` in one rename.

    The temporary file sits beside `path` (a rename is atomic only within one file system) and
    its name starts with a dot and ends with `.tmp`, which keeps a half-written file out of a
    `*.jsonl` glob and out of Spark's listing (it skips names starting with "." or "_").
    `durable` syncs the content to disk before the rename, for a file whose loss after a crash
    would lose a decision (the release pointer), not only work that can be redone.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    # A name of its own per writer (not mkstemp, whose 0600 mode would ignore the umask).
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
