"""Files that readers never see half-written: write to a temporary name beside the target, then
move it into place with ``os.replace`` (atomic on one filesystem). A crash or an interrupted run
leaves the old file (or none), never a partial one; an existing target stays until the new one
is whole."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "temporary_name"]


def temporary_name(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """``.NAME.PID.tmp`` beside ``path``: hidden, unique per process (concurrent writers do not collide)
    and never matched by a glob for the target's kind (``*.npz`` does not find a half-written label).
    ``keep_suffix``: ``.STEM.PID.tmp.SUFFIX``, for writers that choose the format by the suffix."""
    path = Path(path)
    if keep_suffix:
        return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yields the temporary path (:func:`temporary_name`) to write ``path``'s content to; when the block
    ends without an exception, that file replaces ``path``. If the block wrote nothing there (or
    removed it), nothing is replaced; on an exception the temporary file is removed and ``path`` is
    left as it was."""
    path = Path(path)
    tmp = temporary_name(path, keep_suffix)
    try:
        yield tmp
        if tmp.exists():
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> None:
    """``path`` gets ``data`` whole or not at all; ``fsync``: also on disk before the rename (a power
    cut then keeps either file, not an empty one)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
