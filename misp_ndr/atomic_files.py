"""Replace a file so that readers (MISP pulling a feed, Zeek re-reading intel, the next run
reading state) see the old content or the new, never half of it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SHARED_FILE_MODE = 0o644  # mkstemp makes 0600: a web server or sensor must read our outputs


def write_atomically(path: Path, data: bytes, mode: int = SHARED_FILE_MODE) -> None:
    """Temp file in the same directory, fsync, chmod, rename, fsync of the directory."""
    temp = stage_file(path, data, mode)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def stage_file(path: Path, data: bytes, mode: int = SHARED_FILE_MODE) -> Path:
    """`data` on disk, fsynced, under a hidden temporary name beside `path`: the first half
    of an atomic replace, for callers that switch several files together."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp_name, mode)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return Path(temp_name)


def already_holds(path: Path, data: bytes) -> bool:
    """Whether `path` is a regular file holding exactly `data` (compared, not assumed from
    a manifest: a file edited by hand is written again). Read in chunks, as outputs run to
    hundreds of MB."""
    try:
        if not path.is_file() or path.stat().st_size != len(data):
            return False
        with open(path, "rb") as handle:
            return all(handle.read(_COMPARE_BYTES) == data[start:start + _COMPARE_BYTES]
                       for start in range(0, len(data), _COMPARE_BYTES))
    except OSError:
        return False


_COMPARE_BYTES = 1 << 23


def sync_directory(directory: Path) -> None:
    """A rename itself survives a power cut only once the directory entry is on disk."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
