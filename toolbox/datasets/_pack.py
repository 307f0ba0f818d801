"""`tb datasets pack`: a folder of class sub-folders or a CSV table written as WebDataset tar
shards (`train-000000.tar`, ...: `__key__`, the image file's bytes as they are, `cls`) and the
index file that names the classes and counts the samples of every shard.

The same input gives the same bytes: samples go in a seeded order (classes mixed, so that a
shuffle buffer sees them all), through webdataset's `TarWriter` with a fixed modification
time, owner and mode; nothing in a shard or the index depends on the clock or the machine.
Each shard and the index are written atomically under their final names.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolbox import runs
from toolbox.datasets._shards import INDEX_FILE, INDEX_FORMAT
from toolbox.errors import ToolboxError, UsageError
from toolbox.fileio import atomic_path, atomic_write_text, is_file
from toolbox.images import probe_image
from toolbox.progress import NullProgress, Progress
from toolbox.sharding import in_shard
from toolbox.sources import FileSource, SkippedFile, image_folder_source

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}
_TAR_BLOCK = 512
PACK_MTIME = 0  # every member's modification time: shards do not depend on when written


def parse_size(text: str) -> int:
    """`256MB`, `1.5GB`, `500KB` or a byte count as bytes (decimal units, as disks count).

    Raises:
        UsageError: anything else, or a size under one kilobyte.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMG]?)B?\s*", text.upper())
    if not match:
        raise UsageError(f"--shard-size {text!r} is not a size", "e.g. 256MB, 1GB or 500KB",
                         param="--shard-size")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size < 1000:
        raise UsageError(f"--shard-size {text} is under 1KB", "shards hold whole images",
                         param="--shard-size")
    return size


@dataclass
class PackedSplit:
    """One split's shards: their names and sample counts, and its samples per class."""

    shards: dict[str, int] = field(default_factory=dict)
    class_counts: list[int] = field(default_factory=list)
    shard_classes: dict[str, list[int]] = field(default_factory=dict)  # per shard, per class

    @property
    def samples(self) -> int:
        return sum(self.shards.values())


@dataclass
class PackResult:
    """What `pack` wrote under `out`."""

    out: Path
    index_file: Path
    classes: list[str]
    splits: dict[str, PackedSplit]
    bytes_written: int
    skipped: list[SkippedFile] = field(default_factory=list)
    shard: str | None = None  # "K/N" when this job packed one share


def _key(relative: str, used: set[str]) -> str:
    """A sample key from a file's path below SRC: no extension and no dot in its last part
    (webdataset splits a member's name at the first dot of its last part)."""
    stem = relative.rsplit(".", 1)[0] if "." in relative.rsplit("/", 1)[-1] else relative
    head, _, last = stem.rpartition("/")
    key = (head + "/" if head else "") + (last.replace(".", "_") or "_")
    unique, n = key, 2
    while unique in used:
        unique, n = f"{key}-{n}", n + 1
    used.add(unique)
    return unique


def _splits_of(src: Path, path_column: str | None, label_column: str | None,
               split_column: str | None) -> tuple[dict[str, FileSource], list[SkippedFile]]:
    """The source's splits (train, and val when it has one) and the files left out."""
    from toolbox.csv_source import is_csv, read_csv_labels

    if is_csv(src):
        table = read_csv_labels(src, path_column=path_column, label_column=label_column,
                                split_column=split_column)
        full = table.source
        if table.is_val is None:
            return {"train": full}, table.skipped
        parts = {}
        for name, keep in (("train", ~table.is_val), ("val", table.is_val)):
            idx = np.flatnonzero(keep)
            parts[name] = FileSource([full.paths[i] for i in idx], full.targets[idx],
                                     full.classes, full.root)
        return parts, table.skipped
    if any(v is not None for v in (path_column, label_column, split_column)):
        raise UsageError("--path-column, --label-column and --split-column apply to a CSV "
                         "source", "drop them for a folder of class sub-folders")
    if not os.path.isdir(src):
        raise ToolboxError(f"no such folder or CSV file: {src}",
                           "pack DIR/<class>/<image>, or a CSV of paths and labels")
    train_dir, val_dir = runs.split_folders(src)
    parts = {"train": image_folder_source(train_dir, src)}
    if val_dir is not None:
        parts["val"] = image_folder_source(val_dir, src)
        if parts["val"].classes != parts["train"].classes:
            raise ToolboxError(f"{train_dir} and {val_dir} have different class folders",
                               "give both the same class sub-folders")
    skipped = [item for part in parts.values() for item in part.not_images]
    return parts, skipped


def pack(src: str | Path, out: str | Path, *, shard_size: int = 256 * 10**6,
         shard: tuple[int, int] | None = None, seed: int = 0,
         path_column: str | None = None, label_column: str | None = None,
         split_column: str | None = None, select: bool = True,
         progress: Progress | None = None) -> PackResult:
    """Write `src`'s images as tar shards of about `shard_size` bytes into `out`.

    Args:
        shard: (K, N): pack only the files of share K of N (the rule `tb augment --shard`
            uses); its shards are `train-KofN-000000.tar`, its index `index-KofN.json`.
        select: False when `src` holds one share's files already (what `tb augment --shard
            K/N --out-format wds` wrote): `shard` then only names the outputs.
        seed: the order samples go into shards (a seeded permutation, classes mixed).

    Raises:
        ToolboxError: no such source, nothing to pack, OUT inside SRC.
    """
    src, out = Path(src), Path(out)
    progress = progress or NullProgress()
    parts, skipped = _splits_of(src, path_column, label_column, split_column)
    root = (src.parent if is_file(src) else src).resolve()
    if out.resolve().is_relative_to(root) and not is_file(src):
        raise ToolboxError(f"OUT ({out}) lies inside SRC ({src})",
                           "write the shards elsewhere; a later scan of SRC would find them")
    classes = next(iter(parts.values())).classes
    tag = f"-{shard[0]}of{shard[1]}" if shard else ""
    written: dict[str, PackedSplit] = {}
    total_bytes = 0
    out.mkdir(parents=True, exist_ok=True)
    for name, source in parts.items():
        picks = []
        for i, path in enumerate(source.paths):
            relative = Path(path).resolve().relative_to(root).as_posix()
            if shard is None or not select or in_shard(relative, shard):
                picks.append((relative, i))
        order = np.random.default_rng(seed).permutation(len(picks))
        progress.start(f"packing {name}", total=len(picks), unit="images")
        try:
            split, size = _write_split(out, f"{name}{tag}", source, [picks[j] for j in order],
                                       len(classes), shard_size, skipped, progress)
        finally:
            progress.finish()
        written[name] = split
        total_bytes += size
    if not any(s.samples for s in written.values()) and shard is None:
        raise ToolboxError(f"{src}: no readable image to pack", "check the folder or the CSV")
    index_file = write_index(out, classes, written, shard)
    return PackResult(out, index_file, classes, written, total_bytes, skipped,
                      f"{shard[0]}/{shard[1]}" if shard else None)


def write_index(out: Path, classes: list[str], splits: dict[str, PackedSplit],
                shard: tuple[int, int] | None) -> Path:
    """Write the index of the shards in `out` (`index-KofN.json` for share K of N)."""
    index = {"format": INDEX_FORMAT, "classes": classes,
             "shard": f"{shard[0]}/{shard[1]}" if shard else None,
             "splits": {name: {"samples": s.samples, "class_counts": s.class_counts,
                               "shards": {shard_name: {"samples": n,
                                                       "class_counts": s.shard_classes[shard_name]}
                                          for shard_name, n in s.shards.items()}}
                        for name, s in splits.items()}}
    index_file = out / (INDEX_FILE if shard is None else f"index-{shard[0]}of{shard[1]}.json")
    atomic_write_text(index_file, json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index_file


def write_shard(dest: Path, samples: list[dict]) -> None:
    """One tar shard of `samples` (webdataset dicts), atomically and byte for byte the same
    for the same samples: webdataset's `TarWriter` with a fixed time, owner and mode."""
    import webdataset as wds

    with atomic_path(dest) as tmp, open(tmp, "wb") as handle:
        writer = wds.TarWriter(handle, mtime=PACK_MTIME, user="tb", group="tb", mode=0o444)
        for sample in samples:
            writer.write(sample)
        writer.close()


def _member_bytes(size: int) -> int:
    return _TAR_BLOCK + -(-size // _TAR_BLOCK) * _TAR_BLOCK


def _write_split(out: Path, prefix: str, source: FileSource, picks: list[tuple[str, int]],
                 n_classes: int, shard_size: int, skipped: list[SkippedFile],
                 progress: Progress) -> tuple[PackedSplit, int]:
    """Write the shards of one split; leave out (and remove) shards of an earlier pack with
    the same prefix that this one does not write."""
    split = PackedSplit(class_counts=[0] * n_classes)
    used: set[str] = set()
    batch: list[dict] = []
    batch_size, total = 0, 0

    def flush() -> None:
        nonlocal batch, batch_size, total
        name = f"{prefix}-{len(split.shards):06d}.tar"
        write_shard(out / name, batch)
        split.shards[name] = len(batch)
        counts = [0] * n_classes
        for sample in batch:
            counts[int(sample["cls"])] += 1
        split.shard_classes[name] = counts
        total += (out / name).stat().st_size
        batch, batch_size = [], 0

    for relative, i in picks:
        path = Path(source.paths[i])
        reason = probe_image(path)
        if reason is not None:
            skipped.append(SkippedFile(relative, reason))
            progress.advance()
            continue
        data = path.read_bytes()
        ext = path.suffix.lower().lstrip(".") or "img"
        label = int(source.targets[i])
        cost = _member_bytes(len(data)) + _member_bytes(len(str(label)))
        if batch and batch_size + cost > shard_size:
            flush()
        batch.append({"__key__": _key(relative, used), ext: data, "cls": str(label)})
        batch_size += cost
        split.class_counts[label] += 1
        progress.advance()
    if batch:
        flush()
    ours = re.compile(re.escape(prefix) + r"-[0-9]{6}\.tar")
    for stale in out.glob(f"{prefix}-*.tar"):
        if ours.fullmatch(stale.name) and stale.name not in split.shards:
            stale.unlink()
    return split, total
