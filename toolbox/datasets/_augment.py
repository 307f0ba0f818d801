"""`tb augment` with tar shards: shards in (each sample's image augmented, its key and label
kept) and shards out (`--out-format wds`), so a packed data set is augmented without unpacking.

Shards in: each input shard is one task (a worker reads, augments and writes it whole), and
gives one output shard of the same name, or, with files out, an ImageFolder tree
`OUT/<class>/<key>_aug{k}.<ext>`. A copy's seed is `derive_seed(seed, key, k)`, as a folder
run seeds by relative path, so the bytes do not depend on the worker count. A folder in with
shards out is a folder run into a staging folder, packed (`tb datasets pack`) and removed.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolbox.augment import (
    PIPELINE_FILE,
    AugmentReport,
    Pipeline,
    augment_folder,
    augment_with_mask,
    checked_pipeline,
    derive_seed,
    pipeline_to_yaml,
    process_context,
)
from toolbox.datasets._pack import PackedSplit, pack, write_index, write_shard
from toolbox.datasets._shards import looks_like_shards, open_shards, read_samples
from toolbox.devices import default_workers
from toolbox.errors import ToolboxError, UsageError
from toolbox.fileio import atomic_path, atomic_write_text, staging_dir
from toolbox.images import ImageReadError, encode_image, read_image_bytes
from toolbox.progress import NullProgress, Progress
from toolbox.sharding import in_shard
from toolbox.sources import SkippedFile

OUT_FORMATS = ("files", "wds")


@dataclass(frozen=True)
class _ShardJob:
    """One input shard and what to make of it (plain values: cheap to send to a worker)."""

    url: str
    count: int  # samples the index lists
    classes: tuple[str, ...]
    out: str
    to_shards: bool
    pipeline: Pipeline
    seed: int
    copies: int
    include_original: bool
    image_format: str | None
    quality: int | None


@dataclass
class _ShardDone:
    url: str
    read: int = 0
    written: int = 0
    originals: int = 0
    class_counts: list[int] | None = None
    skipped: list[SkippedFile] | None = None


def _augment_shard(job: _ShardJob) -> _ShardDone:
    """Read one shard, augment each sample's image `copies` times, write the outputs."""
    from toolbox.augment import build_pipeline

    augmenter = build_pipeline(job.pipeline, check=False)
    name = job.url.rsplit("/", 1)[-1]
    done = _ShardDone(job.url, class_counts=[0] * len(job.classes), skipped=[])
    samples: list[dict[str, Any]] = []
    for sample in read_samples([job.url], list(job.classes), counts={name: job.count}):
        if sample.skipped is not None:
            done.skipped.append(sample.skipped)
            continue
        try:
            image = read_image_bytes(sample.data, f"{sample.key}.{sample.ext}")
        except ImageReadError as exc:
            done.skipped.append(SkippedFile(f"{job.url}:{sample.key}", exc.reason))
            continue
        done.read += 1
        ext = job.image_format or sample.ext
        outputs = [(f"{sample.key}_aug{k}", encode_image(
            augment_with_mask(augmenter, image, None, derive_seed(job.seed, sample.key, k))[0],
            ext, job.quality), ext) for k in range(job.copies)]
        if job.include_original:
            outputs.append((sample.key, sample.data, sample.ext))
            done.originals += 1
        done.written += job.copies
        for key, data, out_ext in outputs:
            done.class_counts[sample.label] += 1
            if job.to_shards:
                samples.append({"__key__": key, out_ext: data, "cls": str(sample.label)})
            else:
                dest = (Path(job.out) / job.classes[sample.label]
                        / f"{key.replace('/', '_')}.{out_ext}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(dest) as tmp:
                    tmp.write_bytes(data)
    if job.to_shards:
        write_shard(Path(job.out) / name, samples)
    return done


def _write_index(out: Path, classes: list[str], done: list[_ShardDone],
                 shard: tuple[int, int] | None) -> None:
    splits: dict[str, PackedSplit] = {}
    for item in sorted(done, key=lambda d: d.url):
        name = item.url.rsplit("/", 1)[-1]
        split = splits.setdefault(name.split("-", 1)[0],
                                  PackedSplit(class_counts=[0] * len(classes)))
        split.shards[name] = sum(item.class_counts)
        split.shard_classes[name] = item.class_counts
        split.class_counts = [a + b for a, b in zip(split.class_counts, item.class_counts,
                                                    strict=True)]
    write_index(out, classes, splits, shard)


def augment_shards(src: str | Path, out: str | Path, *, spec: str | Path = "medium",
                   seed: int | None = None, copies: int = 1, include_original: bool = False,
                   image_format: str | None = None, quality: int | None = 95,
                   workers: int | None = None, shard: tuple[int, int] | None = None,
                   out_format: str = "wds", shard_size: int = 256 * 10**6,
                   progress: Progress | None = None, **folder_options: Any) -> AugmentReport:
    """Augment tar shards (`src` a pattern or packed folder) into shards or files, or a folder
    into shards (`out_format` "wds").

    Raises:
        ToolboxError: see `augment_folder` and `open_shards`; `--shard` without a seed.
    """
    progress = progress or NullProgress()
    if out_format not in OUT_FORMATS:
        raise UsageError(f"unknown --out-format {out_format!r}", "choose files or wds",
                         param="--out-format")
    out = Path(out)
    if not looks_like_shards(src):  # a folder in, shards out: augment, then pack
        stage = staging_dir(out.resolve().parent, f".{out.name}.augment-")
        try:
            report = augment_folder(src, stage, spec=spec, seed=seed, copies=copies,
                                    include_original=include_original,
                                    image_format=image_format, quality=quality,
                                    workers=workers, shard=shard, progress=progress,
                                    **folder_options)
            pack(stage, out, shard_size=shard_size, shard=shard, select=False,
                 progress=progress)
            shutil.copyfile(stage / PIPELINE_FILE, out / PIPELINE_FILE)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        report.out, report.pipeline_file = str(out), str(out / PIPELINE_FILE)
        return report
    if folder_options:
        raise ToolboxError(f"{', '.join(sorted(folder_options))} apply to a folder input")
    shards = open_shards(str(src))
    pipeline = checked_pipeline(spec)
    if seed is None:
        seed = pipeline.seed
    if seed is None:
        raise ToolboxError("augmenting shards needs a seed", "pass --seed N")
    picked = [(u, n) for u, n in zip(shards.urls, shards.counts, strict=True)
              if shard is None or in_shard(u.rsplit("/", 1)[-1], shard)]
    if any(Path(u).resolve().parent == out.resolve() for u, _ in picked):
        raise ToolboxError(f"OUT ({out}) holds the input shards: the outputs would replace them",
                           "write to another folder")
    out.mkdir(parents=True, exist_ok=True)
    jobs = [_ShardJob(u, n, tuple(shards.classes), str(out), out_format == "wds", pipeline,
                      int(seed), copies, include_original, image_format, quality)
            for u, n in picked]
    wanted = min(workers or default_workers(), max(1, len(jobs)))
    report = AugmentReport(src=str(src), out=str(out), pipeline_file=str(out / PIPELINE_FILE),
                           seed=int(seed), seed_source="--seed", workers=wanted,
                           copies=copies, images_found=sum(n for _, n in picked))
    start = time.perf_counter()
    done: list[_ShardDone] = []
    progress.start("augment", total=len(jobs), unit="shards")
    try:
        if wanted > 1:
            with ProcessPoolExecutor(wanted, mp_context=process_context()) as pool:
                for item in pool.map(_augment_shard, jobs):
                    done.append(item)
                    progress.advance()
        else:
            for job in jobs:
                done.append(_augment_shard(job))
                progress.advance()
    finally:
        progress.finish()
    for item in done:
        report.images_read += item.read
        report.images_written += item.written
        report.originals_copied += item.originals
        report.skipped += item.skipped or []
    report.seconds = round(time.perf_counter() - start, 3)
    report.images_per_second = round(report.images_read / max(report.seconds, 1e-9), 2)
    if out_format == "wds":
        _write_index(out, shards.classes, done, shard)
    header = f"# The resolved pipeline of `tb augment {src} {out}` (seed {seed}).\n"
    atomic_write_text(out / PIPELINE_FILE, pipeline_to_yaml(pipeline, seed=int(seed),
                                                            header=header))
    return report
