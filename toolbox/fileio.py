"""Atomic file writes (outputs appear complete under their final name, or not at all) and a
file test that is safe on any user text."""

from __future__ import annotations

import os
import secrets
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
    tmp = _create_hidden_file(dest)
    mode = tmp.stat().st_mode & 0o777  # what the umask gave
    try:
        yield tmp
        if tmp.stat().st_mode & 0o777 != mode:  # a writer that replaced the file (safetensors)
            tmp.chmod(mode)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_hidden_file(dest: Path) -> Path:
    """Create an empty, uniquely named hidden file beside `dest`, as `open()` would create it.

    Not `tempfile.mkstemp`: it creates files 0600, and the rename would hand that on to every
    output, so a colleague (or a container running as another user) could not read a shared data
    set or run folder. Mode 0666 lets the user's umask decide, as for any normally created file.
    """
    while True:
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}{dest.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def staging_dir(parent: str | Path, prefix: str) -> Path:
    """Create a new, uniquely named folder in `parent`, with the permissions the user's umask
    gives a folder (`tempfile.mkdtemp` makes it 0700, which sticks when it is renamed into place).
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return path


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
    stage = staging_dir(dest.parent, f".{dest.name}.partial-")
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
