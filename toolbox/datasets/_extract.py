"""Unpacking archives without letting a member escape the destination folder.

Tar members go through Python's own `tarfile.data_filter` (PEP 706), checked for every member
before anything is written: absolute paths, `..` components, links that point outside the
folder, device files and special permission bits are refused. Symbolic links that climb (`..`
in the target), whose target is not in normal form, or that are named like a folder are
refused too: the filter judges each link alone, before any is written, so a chain of links, or
a link named `a/` (Python 3.11.7's filter joins its target from inside `a`, then the link is
created as `a`), can reach outside although every single check passed; a link without `..`
resolves below its own folder, and so does any chain of them. Zip members are checked the same
way by hand (zipfile has no link support, but stored symlinks and `..` names are refused too).
"""

from __future__ import annotations

import gzip
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from toolbox.errors import ToolboxError
from toolbox.fileio import atomic_path


class UnsafeArchiveError(ToolboxError):
    """An archive member would land outside the extraction folder (or is a device/link out)."""


def is_archive(path: Path) -> bool:
    """True for tar (any compression) and zip files, by content."""
    path = Path(path)
    try:
        return tarfile.is_tarfile(path) or zipfile.is_zipfile(path)
    except OSError:
        return False


def _check_zip_name(archive: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    if not name:  # zipfile itself fails on it with an IndexError
        raise ToolboxError(f"cannot extract {archive}: a member has an empty name",
                           "the archive is truncated or damaged; fetch it again")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise UnsafeArchiveError(f"refusing {archive.name}: member '{name}' points outside the "
                                 "extraction folder", "the archive is damaged or malicious")
    if info.flag_bits & 0x1:  # zipfile would ask for a password (RuntimeError)
        raise ToolboxError(f"cannot extract {archive}: member '{name}' is encrypted",
                           "tb extracts only archives without a password; decrypt it first")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchiveError(f"refusing {archive.name}: member '{name}' is a symbolic link",
                                 "the archive is damaged or malicious")


NAME_MAX = 255  # bytes in one path component (Linux, macOS, Windows: 255 units)


def _check_tar_member(archive: Path, member: tarfile.TarInfo, dest: Path,
                      files: set[str]) -> None:
    """Refuse `member` unless it is safe to write into `dest`; `files` holds the (normalised)
    names of the files before it, which are all a hard link may name."""
    hint = "the archive is damaged or malicious; nothing was extracted"
    if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX
           for part in PurePosixPath(member.name).parts):
        # No file system takes it: said here, before anything is written.
        raise ToolboxError(f"cannot extract {archive}: member '{member.name[:60]}...' has a "
                           f"name longer than {NAME_MAX} bytes", hint)
    if member.islnk() and posixpath.normpath(member.linkname) not in files:
        # tarfile would fall back to extracting the target member again, which for a link to
        # a folder or to itself recurses without end.
        raise UnsafeArchiveError(f"refusing {archive.name}: member '{member.name}' is a hard "
                                 f"link to '{member.linkname}', which is not a file before it",
                                 hint)
    try:
        tarfile.data_filter(member, str(dest))
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"refusing {archive.name}: member '{member.name}': {exc}",
                                 hint) from exc
    if member.issym() and not _plain_link(member):
        raise UnsafeArchiveError(f"refusing {archive.name}: member '{member.name}' is a symbolic "
                                 f"link to '{member.linkname}', which may lead outside the folder",
                                 hint)


def _check_tar_name_once(archive: Path, member: tarfile.TarInfo, kinds: dict[str, str]) -> None:
    """A name may come again only as the same kind (a file, a folder), never as a link: a link
    replacing a folder makes tarfile fall back to copying the link's target, which for a link to
    itself recurses without end. `kinds` maps the names before `member` to their kind."""
    name = posixpath.normpath(member.name)
    kind = "folder" if member.isdir() else "file" if member.isreg() else "link"
    before, kinds[name] = kinds.get(name), kind
    if before is not None and (before != kind or kind == "link"):
        raise UnsafeArchiveError(f"refusing {archive.name}: member '{member.name}' comes twice, "
                                 f"as a {before} and as a {kind}",
                                 "the archive is damaged or malicious; nothing was extracted")


def _plain_link(member: tarfile.TarInfo) -> bool:
    """A symbolic link the module's rule admits: a relative target in normal form without `..`
    (no `//` or `.` either, which Python 3.11's realpath misreads) under a name that is not
    written like a folder."""
    target = PurePosixPath(member.linkname)
    return (not member.name.endswith("/") and target.as_posix() == member.linkname
            and not target.is_absolute() and ".." not in target.parts)


def _data_filter_umask(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """`tarfile.data_filter`, but files get the user's umask instead of the archive's modes
    (as every file tb writes does; an archive made with umask 077 would otherwise stay private)."""
    return tarfile.data_filter(member, dest).replace(mode=None, deep=False)


def extract_archive(archive: Path, dest: Path) -> list[Path]:
    """Extract a tar or zip `archive` into `dest` (which should be a fresh folder).

    Every member is checked before any is written, so a refused archive leaves nothing behind.

    Raises:
        UnsafeArchiveError: a member with an absolute path, `..`, or a link out of `dest`.
        ToolboxError: the file is not a readable archive.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                files: set[str] = set()
                kinds: dict[str, str] = {}
                for member in members:
                    _check_tar_member(archive, member, dest, files)
                    _check_tar_name_once(archive, member, kinds)
                    if member.isreg() or member.islnk():
                        files.add(posixpath.normpath(member.name))
                # Symbolic links last and by hand: when tarfile cannot make a link it copies
                # the link's target instead, which for a link that leads to itself recurses
                # without end; made last, no member is ever written through a link.
                tar.extractall(dest, members=[m for m in members if not m.issym()],
                               filter=_data_filter_umask)
                for member in members:
                    if member.issym():
                        (dest / member.name).parent.mkdir(parents=True, exist_ok=True)
                        os.symlink(member.linkname, dest / member.name)
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _check_zip_name(archive, info)
                zf.extractall(dest, members=infos)
        else:
            raise ToolboxError(f"{archive} is not a tar or zip archive",
                               "pass a .tar, .tar.gz, .tgz or .zip file")
    # Besides the archive modules' own errors, damaged archives raise KeyError (a tar hard link
    # to a member that is not there), ValueError (a zip name that is not UTF-8),
    # NotImplementedError (a zip version or method zipfile lacks), zlib and lzma errors.
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError,
            NotImplementedError, zlib.error, lzma.LZMAError) as exc:
        raise ToolboxError(f"cannot extract {archive}: {exc}",
                           "the archive is truncated or damaged; fetch it again") from exc
    return sorted(p for p in dest.rglob("*") if _is_file(p))


def _is_file(path: Path) -> bool:
    """A regular file, or a link to one; False for a link the system cannot follow (a link
    loop, or a target name longer than the system allows: both may come out of an archive)."""
    try:
        return path.is_file()
    except OSError:
        return False


def gunzip(src: Path, dest: Path) -> Path:
    """Decompress a gzip file onto `dest` atomically.

    Raises:
        ToolboxError: `src` is not valid gzip data (truncated, corrupt).
    """
    try:
        with gzip.open(src, "rb") as fin, atomic_path(dest) as tmp, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ToolboxError(f"cannot decompress {src}: {exc}",
                           "the file is truncated or not gzip data") from exc
    return Path(dest)
