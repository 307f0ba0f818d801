"""`tb datasets fetch`: download or import a data set's files, verify them, lay them out for
torchvision, and optionally export them (`_export.py` writes the folders)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolbox.datasets._download import (
    ChecksumError,
    Downloaded,
    DownloadSettings,
    download,
    part_size,
)
from toolbox.datasets._export import (
    ExportResult,
    export_image_folder,
    export_segmentation_canvases,
)
from toolbox.datasets._extract import extract_archive, gunzip, is_archive
from toolbox.datasets._loader import SPLITS, fetch_command, open_dataset
from toolbox.datasets._pet import SegmentationFolder, build_pet_segmentation
from toolbox.datasets._registry import (
    SEGMENTATION_LOADERS,
    DatasetInfo,
    RemoteFile,
    get_dataset,
)
from toolbox.datasets._verify import (
    MANIFEST_DIR,
    check_dataset,
    md5_file,
    write_manifest,
)
from toolbox.errors import ToolboxError, UsageError
from toolbox.fileio import atomic_path, staging_dir
from toolbox.progress import NullProgress, Progress

if TYPE_CHECKING:
    from toolbox.segment.canvas import CanvasExport

MIRROR_ENV = "TB_DATASETS_MIRROR"


@dataclass
class FileReport:
    """What happened to one published file."""

    filename: str
    action: str  # downloaded, imported, already present
    source: str  # the URL or the local path it came from
    bytes: int = 0
    seconds: float = 0.0
    verified_by: str = ""
    resumed_at: list[int] = field(default_factory=list)
    mb_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.mb_per_s is None and self.seconds > 0 and self.bytes:
            self.mb_per_s = self.bytes / 1e6 / self.seconds


@dataclass
class FetchResult:
    """The outcome of `tb datasets fetch`."""

    name: str
    root: Path
    state: str  # fetched, imported, adopted (torchvision's own download), already present
    files: list[FileReport]
    splits: dict[str, int]  # samples per split: torchvision loaded them, or pairs written
    classes: int
    seconds: float
    export: ExportResult | None = None
    segmentation: CanvasExport | SegmentationFolder | None = None


def mirror_urls(info: DatasetInfo, filename: str, mirrors: Sequence[str] = ()) -> list[str]:
    """URLs to try for `filename`: `mirrors`, then `$TB_DATASETS_MIRROR`, then the registry's."""
    env = os.environ.get(MIRROR_ENV, "").split()
    bases = list(dict.fromkeys([*mirrors, *env, *info.mirrors]))
    return [f"{base.rstrip('/')}/{filename}" for base in bases]


def _content_md5_of_gzip(path: Path) -> str | None:
    """MD5 of a gzip file's decompressed bytes, or None if it is not valid gzip."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    except (OSError, EOFError):
        return None
    return digest.hexdigest()


def _acceptable(rf: RemoteFile, path: Path) -> bool:
    """Cheap pre-check of a download: the file's MD5, or for gzip its decompressed content's."""
    if md5_file(path) == rf.md5:
        return True
    content = rf.members[0].md5 if rf.unpack == "gzip" else None
    return content is not None and _content_md5_of_gzip(path) == content


def _install(info: DatasetInfo, rf: RemoteFile, src: Path, root: Path,
             move: bool) -> tuple[dict[str, str], str]:
    """Unpack a published file into a staging folder, verify, and move its members into place.

    The file passes if its own MD5 is the published one, or, failing that, if every member it
    unpacks to has a recorded MD5 and matches it (a re-compressed or re-packed copy of the same
    data). Members land under their final names only after passing, each by an atomic rename.
    """
    file_ok = md5_file(src) == rf.md5
    staging_parent = root / MANIFEST_DIR / "staging"
    staging_parent.mkdir(parents=True, exist_ok=True)
    work = staging_dir(staging_parent, f"{info.name}-")
    try:
        unpacked: dict[str, Path] = {}
        try:
            if rf.unpack == "tar":
                extract_archive(src, work)
                unpacked = {m.path: work / m.path for m in rf.members}
            elif rf.unpack == "gzip":
                member = rf.members[0]
                unpacked = {member.path: gunzip(src, work / member.path)}
            else:
                unpacked = {rf.members[0].path: src}
        except ToolboxError:
            if file_ok:
                raise
            raise ChecksumError(f"{src} fails its checksum and does not unpack",
                                "the file is truncated or corrupt; fetch it again") from None
        missing = [path for path, p in unpacked.items() if not p.is_file()]
        if missing:
            raise ChecksumError(f"{src} lacks {', '.join(missing)}",
                                "it is not the published file; fetch it again")
        digests = {path: md5_file(p) for path, p in unpacked.items()}
        expected = {m.path: m.md5 for m in rf.members}
        wrong = [p for p, md5 in digests.items() if expected[p] and expected[p] != md5]
        if file_ok and not wrong:
            how = "MD5 of the file"
        elif not file_ok and not wrong and all(expected.values()):
            how = ("MD5 of the decompressed data (the .gz was re-compressed)"
                   if rf.unpack == "gzip" else "MD5 of every unpacked member")
        else:
            detail = f"MD5 {md5_file(src)}, expected {rf.md5}"
            if not file_ok and not all(expected.values()):
                detail += "; no checksum of its content is published to fall back on"
            elif wrong:
                detail += f"; content differs too ({', '.join(wrong)})"
            raise ChecksumError(f"{src.name} fails verification ({detail})",
                                "the file is corrupt or not the published one; it was not used")
        for path, p in unpacked.items():
            dest = root / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if p == src and not move:
                with atomic_path(dest) as tmp:
                    shutil.copyfile(src, tmp)
            else:
                os.replace(p, dest)
        return digests, how
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _index(folders: Sequence[Path]) -> dict[str, list[Path]]:
    """Files under `folders` by base name."""
    index: dict[str, list[Path]] = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                index.setdefault(p.name, []).append(p)
    return index


def _import_members(info: DatasetInfo, rf: RemoteFile, index: dict[str, list[Path]],
                    root: Path) -> tuple[dict[str, str], str, str] | None:
    """Members of `rf` found already unpacked (e.g. `data_batch_1`, a decompressed idx file):
    each must match its recorded MD5. None when they are not all there."""
    found = {}
    for m in rf.members:
        candidates = index.get(Path(m.path).name, [])
        if not candidates:
            return None
        found[m.path] = candidates[0]
    unknown = [m.path for m in rf.members if not m.md5]
    if unknown:
        raise ToolboxError(
            f"no published checksum covers the unpacked file {found[unknown[0]]}",
            f"supply the published {rf.filename} instead (its MD5 is known)")
    digests = {}
    for m in rf.members:
        md5 = md5_file(found[m.path])
        if md5 != m.md5:
            raise ChecksumError(f"{found[m.path]} fails its checksum (MD5 {md5}, expected {m.md5})",
                                "the file is corrupt or not the published one; it was not used")
        digests[m.path] = md5
    for m in rf.members:
        with atomic_path(root / m.path) as tmp:
            shutil.copyfile(found[m.path], tmp)
    return digests, "MD5 of every unpacked file", str(Path(os.path.commonpath(
        [str(p) for p in found.values()])))


def _fetch_missing(info: DatasetInfo, root: Path, todo: list[RemoteFile],
                   mirrors: Sequence[str], settings: DownloadSettings,
                   progress: Progress) -> list[FileReport]:
    reports = []
    downloads = root / MANIFEST_DIR / "downloads"
    for rf in todo:
        dest = downloads / rf.filename
        t0 = time.monotonic()
        if dest.is_file() and _acceptable(rf, dest):
            # verified by a run that was interrupted before unpacking it
            done = Downloaded(dest, f"{dest} (downloaded earlier)", part_size(dest))
        else:
            done = download(mirror_urls(info, rf.filename, mirrors), dest,
                            verify=lambda p, rf=rf: _acceptable(rf, p),
                            settings=settings, progress=progress)
        seconds = time.monotonic() - t0
        try:
            digests, how = _install(info, rf, dest, root, move=True)
        except ToolboxError:
            dest.unlink(missing_ok=True)  # unusable (corrupt, unsafe): never offered again
            raise
        # An interrupted unpack keeps the verified download for the next run to reuse.
        dest.unlink(missing_ok=True)
        write_manifest(info, root, digests, source=done.url)
        progress.note(f"{rf.filename}: {done.bytes} bytes from {done.url}, verified by {how}")
        reports.append(FileReport(rf.filename, "downloaded", done.url, done.bytes, seconds, how,
                                  done.resumed_at))
    return reports


def _import(info: DatasetInfo, root: Path, todo: list[RemoteFile],
            from_archives: Sequence[Path], from_dir: Path | None,
            progress: Progress) -> list[FileReport]:
    reports = []
    published: dict[str, Path] = {}
    staging_parent = root / MANIFEST_DIR / "staging"
    folders: list[Path] = [Path(from_dir)] if from_dir else []
    cleanup: list[Path] = []
    by_name = {rf.filename: rf for rf in info.files}
    try:
        for archive in map(Path, from_archives):
            if not archive.is_file():
                raise UsageError(f"no such file: {archive}", "check the --from-archive path")
            if archive.name in by_name or not is_archive(archive):
                if archive.name not in by_name:
                    raise ToolboxError(
                        f"{archive} is neither a file of '{info.name}' nor a tar/zip archive",
                        "expected one of: " + ", ".join(by_name))
                published[archive.name] = archive
                continue
            staging_parent.mkdir(parents=True, exist_ok=True)
            work = staging_dir(staging_parent, "archive-")
            cleanup.append(work)
            extract_archive(archive, work)
            folders.append(work)
        if from_dir and not Path(from_dir).is_dir():
            raise UsageError(f"no such folder: {from_dir}", "check the --from-dir path")
        index = _index(folders)
        for rf in todo:
            t0 = time.monotonic()
            candidates = ([published[rf.filename]] if rf.filename in published
                          else index.get(rf.filename, []))
            if candidates:
                # Several copies (e.g. MNIST and Fashion-MNIST share file names): the first
                # that verifies wins; if none does, the first one's error is the answer.
                first_error: ToolboxError | None = None
                for src in candidates:
                    try:
                        digests, how = _install(info, rf, src, root, move=False)
                        break
                    except ToolboxError as exc:
                        first_error = first_error or exc
                else:
                    assert first_error is not None
                    raise first_error
                size, where = part_size(src), str(src)
            else:
                got = _import_members(info, rf, index, root)
                if got is None:
                    sources = ", ".join(str(s) for s in [*from_archives, from_dir] if s)
                    raise ToolboxError(
                        f"{rf.filename} (or the files it unpacks to) not found in {sources}",
                        "supply the published files: " + ", ".join(by_name))
                digests, how, where = got
                size = sum(part_size(root / p) for p in digests)
            write_manifest(info, root, digests, source=where)
            progress.note(f"{rf.filename}: imported from {where}, verified by {how}")
            reports.append(FileReport(rf.filename, "imported", where, size,
                                      time.monotonic() - t0, how))
    finally:
        for work in cleanup:
            shutil.rmtree(work, ignore_errors=True)
    return reports


@contextmanager
def _fetch_lock(info: DatasetInfo, root: Path) -> Iterator[None]:
    """Keep two fetches of one data set into one root from writing the same `.part` file."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, checksums still protect
        yield
        return
    lock_path = root / MANIFEST_DIR / f"{info.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ToolboxError(f"another fetch of '{info.name}' into {root} is running",
                               "wait for it to finish, then run this again") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _adopt_torchvision_downloads(info: DatasetInfo, root: Path, todo: list[RemoteFile],
                                 progress: Progress) -> list[FileReport]:
    """Published files that torchvision's own `download=True` left under the root (it keeps the
    archives and .gz files): verified and used instead of downloading them again."""
    reports = []
    for rf in todo:
        folder = root / Path(rf.members[0].path).parent
        candidates = [root / rf.filename, folder / rf.filename]
        src = next((p for p in candidates if p.is_file()), None)
        if src is None:
            continue
        t0 = time.monotonic()
        try:
            digests, how = _install(info, rf, src, root, move=False)
        except ToolboxError as exc:
            progress.note(f"ignoring {src}: {exc.message}")
            continue
        write_manifest(info, root, digests, source=str(src))
        reports.append(FileReport(rf.filename, "verified in place", str(src), part_size(src),
                                  time.monotonic() - t0, how))
    return reports


def fetch_dataset(*, name: str, root: Path, mirrors: Sequence[str] = (),
                  from_archives: Sequence[Path] = (), from_dir: Path | None = None,
                  export_folder: Path | None = None, export_max: int | None = None,
                  export_segmentation: Path | None = None, binary: bool = False,
                  canvas_size: int = 96, seed: int = 0,
                  settings: DownloadSettings | None = None,
                  progress: Progress | None = None) -> FetchResult:
    """Make data set `name` present and verified under `root`, then prove torchvision loads it.

    Files already present are verified (full MD5) and skipped. Missing ones are downloaded
    (mirrors first, then `$TB_DATASETS_MIRROR`, then the registry's URLs) or, with
    `from_archives` / `from_dir`, imported from local copies, verified the same way.

    Raises:
        DownloadError, ChecksumError, UnsafeArchiveError, ToolboxError: with the way out as hint.
    """
    progress = progress or NullProgress()
    settings = settings or DownloadSettings()
    info = get_dataset(name)
    segmentation_set = info.loader in SEGMENTATION_LOADERS
    if segmentation_set and (export_folder is not None or export_max or binary
                             or canvas_size != 96):
        raise UsageError(f"{info.name} is a segmentation data set: --export-folder, "
                         "--export-max, --binary and --canvas-size do not apply",
                         "leave them out (--export-segmentation DIR picks the folder)")
    root = Path(root)
    t0 = time.monotonic()
    status = check_dataset(info, root, full=True)
    done = set(status.digests)
    todo = [rf for rf in info.files if not all(m.path in done for m in rf.members)]
    reports = [FileReport(rf.filename, "already present", str(root), 0, 0.0,
                          "MD5 of the unpacked files") for rf in info.files if rf not in todo]
    if status.corrupt:
        progress.note(f"replacing files that fail their checksum: {', '.join(status.corrupt)}")
    offline = bool(from_archives or from_dir)
    state = "already present"
    if todo:
        root.mkdir(parents=True, exist_ok=True)
        with _fetch_lock(info, root):
            adopted = _adopt_torchvision_downloads(info, root, todo, progress)
            reports += adopted
            missing = [rf for rf in todo if rf.filename not in {r.filename for r in adopted}]
            state = "adopted" if not missing else ("imported" if offline else "fetched")
            if missing and offline:
                reports += _import(info, root, missing, from_archives, from_dir, progress)
            elif missing:
                reports += _fetch_missing(info, root, missing, mirrors, settings, progress)
            shutil.rmtree(root / MANIFEST_DIR / "staging", ignore_errors=True)
    else:
        # Record what was verified, so later opens need not hash everything again.
        write_manifest(info, root, status.digests, source="verified in place")
    if segmentation_set:
        folder = build_pet_segmentation(info, root, export_segmentation, progress)
        return FetchResult(info.name, root, state, reports, folder.counts, len(folder.classes),
                           time.monotonic() - t0, segmentation=folder)
    try:
        opened = [open_dataset(name, root, split) for split in SPLITS]
        splits = {ds.split: len(ds) for ds in opened}
        classes = len(opened[-1].classes)
    except ToolboxError as exc:
        raise ToolboxError(f"the files verify but torchvision cannot load them: {exc.message}",
                           fetch_command(name, root)) from exc
    export = None
    if export_folder is not None:
        export = export_image_folder(name=name, root=root, dest=export_folder,
                                     max_per_split=export_max, progress=progress)
    segmentation = None
    if export_segmentation is not None:
        segmentation = export_segmentation_canvases(
            info, root, export_segmentation, count=export_max, binary=binary, size=canvas_size,
            seed=seed, progress=progress)
    return FetchResult(info.name, root, state, reports, splits, classes,
                       time.monotonic() - t0, export, segmentation)
