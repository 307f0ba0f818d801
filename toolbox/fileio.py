"""Atomic file writes (outputs appear complete under their final name, or not at all) and a
file test that is safe on any user text."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside `dest`; rename it onto `dest` if the block succeeds.

    The temporary name keeps `dest`'s extension (writers pick formats by it) and starts with a
    dot, so folder scans that skip hidden files never take a half-written file as an input. On any
    exception, Ctrl-C included, the temporary file is removed and `dest` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=dest.suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: str | Path, data: bytes) -> Path:
    """Write `data` to `dest` atomically and return `dest`."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_write_text(dest: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `dest` atomically and return `dest`."""
    return atomic_write_bytes(dest, text.encode("utf-8"))


@contextmanager
def atomic_folder(dest: str | Path) -> Iterator[Path]:
    """Yield a hidden staging folder beside `dest`; rename it onto `dest` if the block succeeds.

    For exports of many files: an interrupted one never looks like a complete one. `dest` must
    not exist or be an empty folder (nothing is overwritten).

    Raises:
        ToolboxError: `dest` exists and is not an empty folder.
    """
    import shutil

    from toolbox.errors import ToolboxError

    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ToolboxError(f"export folder {dest} already exists and is not empty",
                           "choose a new folder; tb never overwrites an export")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        yield stage
        if dest.exists():
            dest.rmdir()
        os.replace(stage, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def is_file(path: str | Path) -> bool:
    """Whether `path` names an existing regular file; False for text no file can have.

    `Path.is_file()` raises OSError for names the operating system refuses to look up (longer
    than its NAME_MAX or PATH_MAX), so a long inline spec asked "is this a file?" crashed
    instead of being parsed as text.
    """
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False
