"""Is a data set present and intact under a root? Checksums, and the manifest a fetch leaves."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.datasets._registry import DatasetInfo, Member
from toolbox.fileio import atomic_write_text

MANIFEST_DIR = ".tb-datasets"
CHUNK = 1 << 20


# MD5s computed in this process, by (device, inode, size, mtime): a fetch checks a file at
# several steps (and the downloader hashes while writing), but reads it for hashing only once.
_KNOWN: dict[tuple[int, int, int, int], str] = {}


def _identity(path: Path) -> tuple[int, int, int, int]:
    st = Path(path).stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def remember_md5(path: Path, md5: str) -> None:
    """Record the MD5 of `path` as it is now (computed elsewhere, e.g. while downloading)."""
    _KNOWN[_identity(path)] = md5


def md5_file(path: Path) -> str:
    """Hex MD5 of a file's bytes (a checksum against corruption, not a security measure)."""
    key = _identity(path)
    if key in _KNOWN:
        return _KNOWN[key]
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    _KNOWN[key] = digest.hexdigest()
    return _KNOWN[key]


def manifest_path(info: DatasetInfo, root: Path) -> Path:
    """Where a fetch records what it verified (hidden, so it is never taken for data)."""
    return Path(root) / MANIFEST_DIR / f"{info.name}.json"


def read_manifest(info: DatasetInfo, root: Path) -> dict:
    """The recorded members ({path: {md5, size, mtime_ns}}), or {} when there is none."""
    try:
        data = json.loads(manifest_path(info, root).read_text(encoding="utf-8"))
        return dict(data.get("members", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def write_manifest(info: DatasetInfo, root: Path, digests: dict[str, str], source: str) -> Path:
    """Record verified members (merged with those recorded before) with their size and mtime,
    so later checks can trust unchanged files without hashing them again."""
    members = read_manifest(info, root)
    for path, md5 in digests.items():
        stat = (Path(root) / path).stat()
        members[path] = {"md5": md5, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    text = json.dumps({"name": info.name, "source": source, "verified_at": time.time(),
                       "members": members}, indent=2)
    return atomic_write_text(manifest_path(info, root), text)


@dataclass
class DatasetStatus:
    """What a check found: `state` is present, missing, incomplete, corrupt or unverified."""

    name: str
    root: Path
    state: str
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def present(self) -> bool:
        return self.state == "present"


def _member_ok(member: Member, root: Path, recorded: dict, full: bool) -> tuple[str, str | None]:
    """("ok"|"missing"|"corrupt"|"unverified", md5) for one member."""
    path = Path(root) / member.path
    try:
        stat = path.stat()
    except OSError:
        return "missing", None
    entry = recorded.get(member.path)
    expected = member.md5 or (entry or {}).get("md5")
    if expected is None:
        return "unverified", None
    if (not full and entry and entry.get("md5") == expected and entry.get("size") == stat.st_size
            and entry.get("mtime_ns") == stat.st_mtime_ns):
        return "ok", expected  # unchanged since the fetch verified it
    actual = md5_file(path)
    return ("ok" if actual == expected else "corrupt"), actual


def check_dataset(info: DatasetInfo, root: Path, full: bool = False) -> DatasetStatus:
    """Check every member under `root`.

    Members unchanged (same size and mtime) since a fetch verified them are trusted without
    re-hashing unless `full`; anything else is hashed against the registry's MD5, or for members
    without a published MD5, against the one the fetch recorded.
    """
    recorded = read_manifest(info, root)
    status = DatasetStatus(info.name, Path(root), "present")
    for member in info.members:
        state, md5 = _member_ok(member, root, recorded, full)
        if state == "ok":
            status.digests[member.path] = md5 or ""
        else:
            getattr(status, state).append(member.path)
    if status.corrupt:
        status.state = "corrupt"
    elif len(status.missing) == len(info.members):
        status.state = "missing"
    elif status.missing:
        status.state = "incomplete"
    elif status.unverified:
        status.state = "unverified"
    return status


@dataclass
class DatasetRow:
    """One line of `tb datasets list`."""

    name: str
    title: str
    task: str
    classes: int
    train_size: int
    test_size: int
    download_bytes: int
    license_url: str
    present: bool
    state: str
    path: Path


def list_status(root: Path, full: bool = False) -> list[DatasetRow]:
    """Every registry entry with its state under `root` (quick check unless `full`)."""
    from toolbox.datasets._registry import list_datasets

    rows = []
    for info in list_datasets():
        status = check_dataset(info, Path(root), full=full)
        rows.append(DatasetRow(info.name, info.title, info.task, len(info.classes),
                               info.train_size, info.test_size, info.download_size,
                               info.license_url, status.present, status.state,
                               Path(root) / info.folder))
    return rows
