"""The folder runner behind `tb augment SRC OUT`: plan (`_plan`), run in worker processes
(`_pool`, `_worker`), preview and report.

Reproducibility: every output is a function of (seed, relative path, copy index) alone. Before
each copy the augmenter tree is re-seeded with a hash of those three, so the bytes written do not
depend on `workers`, on which worker got the file, or on the order files finish in.

Sharing one job between machines (`shard`): each file belongs to the shard a hash of its
relative path picks, so N runs with the same seed, each given one shard, write between them
exactly the files (and bytes) one run would.

Memory stays flat as folders grow: the main process only holds the plan (paths) and keeps a
bounded number of files in flight; each worker reads, augments and writes its own files, and
sends back a few counters.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolbox.augment._plan import (
    FORMATS,
    PIPELINE_FILE,
    check_out_is_this_run,
    check_out_location,
    in_shard,
    plan_tasks,
    recorded_pipeline,
)
from toolbox.augment._pool import _WarmPool, run_tasks
from toolbox.augment._spec import Pipeline
from toolbox.augment._spec_writer import pipeline_to_yaml
from toolbox.augment._worker import _Job, _Result, _Task
from toolbox.devices import default_workers
from toolbox.errors import ToolboxError
from toolbox.fileio import atomic_write_text
from toolbox.images import (
    ImageFile,
    ImageReadError,
    collect_images,
    not_an_image,
    read_image,
    write_image,
)
from toolbox.progress import NullProgress, Progress
from toolbox.sources import SkippedFile

if TYPE_CHECKING:
    import numpy as np


@dataclass
class AugmentReport:
    """What a folder run did; `tb augment` renders it as a table or `--json`."""

    src: str
    out: str
    pipeline_file: str
    seed: int
    seed_source: str  # "--seed", "pipeline file", "resumed from OUT/pipeline.yaml", "random"
    workers: int
    copies: int
    images_found: int
    images_read: int = 0
    images_written: int = 0  # augmented copies written
    originals_copied: int = 0
    masks_written: int = 0
    already_done: int = 0  # inputs whose outputs all existed (--skip-existing)
    shard: str | None = None  # "K/N" when this run did one shard of the job
    skipped: list[SkippedFile] = field(default_factory=list)
    skip_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0
    preview: str | None = None
    tensorboard: str | None = None

    @property
    def nothing_written(self) -> bool:
        """True when the run produced nothing and had nothing left to do from an earlier run
        (a shard that holds no files had nothing to do: not a failure)."""
        return self.images_found > 0 and self.images_written == 0 and self.already_done == 0


# ------------------------------------------------------------------------------ preview
def _preview_grid(tasks: list[_Task], results: dict[str, _Result], count: int,
                  columns: int) -> np.ndarray | None:
    from toolbox.tensorboard import image_grid

    images = []
    for task in tasks:
        result = results.get(task.relative)
        if result is None or result.reason is not None or not task.copies:
            continue
        outs = [dest for _, dest, _ in task.copies[:columns - 1]]
        try:
            row = [read_image(task.path)] + [read_image(d) for d in outs]
        except ImageReadError:
            continue
        row += [row[-1] * 0] * (columns - len(row))  # black cells keep the grid rectangular
        images.extend(row)
        if len(images) >= count * columns:
            break
    if not images:
        return None
    h, w = images[0].shape[:2]
    scale = min(1.0, 192 / max(h, w))  # small images are not blown up
    return image_grid(images, nrow=columns, padding=2,
                      size=(max(1, round(h * scale)), max(1, round(w * scale))))


# ---------------------------------------------------------------------------------- run
def augment_folder(src: str | Path, out: str | Path, *, spec: str | Path = "medium",
                   seed: int | None = None, copies: int = 1, include_original: bool = False,
                   image_format: str | None = None, quality: int | None = 95,
                   workers: int | None = None, masks: str | Path | None = None,
                   skip_existing: bool = False, preview: str | Path | None = None,
                   preview_count: int = 4, tensorboard: str | Path | None = None,
                   shard: tuple[int, int] | None = None, overwrite: bool = False,
                   progress: Progress | None = None) -> AugmentReport:
    """Augment every image under SRC into OUT, mirroring SRC's sub-folders.

    Args:
        src: a folder (searched recursively), one image file, or a glob.
        out: the output folder; it must not be SRC or inside it.
        spec: a preset name, an inline spec or a pipeline file (see `build_augmenter`).
        seed: makes every output a function of (seed, relative path, copy index); None takes
            the pipeline file's seed, else the seed recorded in OUT by an interrupted run when
            `skip_existing`, else a random one (reported and recorded in OUT/pipeline.yaml).
        copies: augmented copies per image, written as NAME_aug{k}.EXT with k from 0.
        include_original: also copy each original (byte for byte) into OUT.
        image_format: "png", "jpg" or "webp"; None keeps each input's format.
        quality: 1-100 for lossy formats (JPEG, WebP).
        workers: worker processes (default: the number of cores); 1 runs in this process.
        masks: a folder of PNG segmentation masks with the same relative paths as the images;
            images then go to OUT/images and masks to OUT/masks, transformed together.
        skip_existing: leave outputs that already exist (resume an interrupted run).
        preview: write a PNG grid of a few originals beside their augmented copies.
        preview_count: rows in the preview grid.
        tensorboard: also log the preview grid (and the pipeline) to this log dir.
        shard: (K, N), 0 <= K < N: do only the files of shard K of N (see `in_shard`); every
            shard needs the same seed, so one must be given (or be in the pipeline file).
        overwrite: write into an OUT that holds another run's outputs (otherwise refused:
            see `check_out_is_this_run`).
        progress: receives progress and notes (the CLI passes a rich bar).

    Raises:
        AugmentSpecError: a bad spec, before any image is read.
        ToolboxError: bad options, no images, or an OUT that could overwrite inputs.

    With more than one worker, processes are forked on Linux while torch is not imported, and
    otherwise started with forkserver (spawn off Linux), so a script that calls this must guard
    its top level with `if __name__ == "__main__":`.
    """
    progress = progress or NullProgress()
    if copies < 1:
        raise ToolboxError(f"--copies must be at least 1, got {copies}")
    if quality is not None and not 1 <= quality <= 100:
        raise ToolboxError(f"--quality must be between 1 and 100, got {quality}")
    if image_format is not None:
        image_format = image_format.lower().lstrip(".")
        if image_format not in FORMATS:
            raise ToolboxError(f"unknown image format '{image_format}'",
                               f"choose one of: {', '.join(sorted(set(FORMATS) - {'jpeg'}))}")
    if workers is not None and workers < 1:
        raise ToolboxError(f"--workers must be at least 1, got {workers}")
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise ToolboxError(f"--shard {shard[0]}/{shard[1]}: K must be in 0..N-1",
                           "number shards from 0, e.g. --shard 0/3, 1/3, 2/3")
    masks_root = None
    if masks is not None:
        masks_root = Path(masks).resolve()
        if not masks_root.is_dir():
            raise ToolboxError(f"masks folder not found: {masks}",
                               "pass the folder that holds one PNG mask per image")

    # The spec is parsed, validated and test-run before any image is read.
    pipeline = checked_pipeline(spec)
    wanted = workers or default_workers()
    # Worker processes start now, while this process plans the run.
    pool = _WarmPool(wanted) if wanted > 1 else None
    try:
        report = _run(src, out, pool, pipeline=pipeline, seed=seed, copies=copies,
                      include_original=include_original, image_format=image_format,
                      quality=quality, masks_root=masks_root, skip_existing=skip_existing,
                      preview=preview, preview_count=preview_count, tensorboard=tensorboard,
                      shard=shard, overwrite=overwrite, progress=progress)
    except BaseException:
        if pool is not None:
            pool.close(cancel=True)
        raise
    if pool is not None:
        pool.close()
    return report


def checked_pipeline(spec: str | Path) -> Pipeline:
    """Load and test-run the spec without starting OpenCV threads in this process, so worker
    processes can be forked from it safely."""
    import cv2

    from toolbox.augment._pipeline import build_pipeline, load_spec

    pipeline = load_spec(spec)
    previous = cv2.getNumThreads()
    cv2.setNumThreads(0)
    try:
        build_pipeline(pipeline, check=True)
    finally:
        cv2.setNumThreads(previous)
    return pipeline


def _run(src: str | Path, out: str | Path, pool: _WarmPool | None, *, pipeline: Pipeline,
         seed: int | None, copies: int, include_original: bool, image_format: str | None,
         quality: int | None, masks_root: Path | None, skip_existing: bool,
         preview: str | Path | None, preview_count: int, tensorboard: str | Path | None,
         shard: tuple[int, int] | None, overwrite: bool, progress: Progress) -> AugmentReport:
    check_out_location(src, out, masks_root)
    out_path = Path(out)
    if preview is not None and Path(preview).resolve().suffix.lower() != ".png":
        raise ToolboxError(f"--preview {preview} must be a .png file")
    others: list[ImageFile] = []
    files = collect_images(src, others)
    if not files:
        also = f" (only {len(others)} other file(s), e.g. {others[0].relative})" if others else ""
        raise ToolboxError(f"no images found in {src}{also}",
                           "images are files ending in .png, .jpg, .jpeg, .bmp, .gif, .tif, "
                           ".tiff or .webp")
    if preview is not None and Path(preview).resolve() in {f.path for f in files}:
        raise ToolboxError(f"--preview {preview} would overwrite an input image")

    recorded = recorded_pipeline(out_path, need_seed=skip_existing and seed is None
                         and pipeline.seed is None)
    if shard is not None and seed is None and pipeline.seed is None:
        raise ToolboxError("--shard needs a seed that every shard shares",
                           "pass the same --seed N to every shard (or a pipeline file with "
                           "a seed)")
    if seed is not None:
        seed_source = "--seed"
    elif pipeline.seed is not None:
        seed, seed_source = pipeline.seed, "pipeline file"
    elif skip_existing and recorded is not None and recorded.seed is not None:
        seed, seed_source = recorded.seed, f"resumed from {out_path / PIPELINE_FILE}"
    else:
        seed, seed_source = secrets.randbelow(2**31), "random"
    if not overwrite:
        check_out_is_this_run(out_path, pipeline, int(seed), recorded, skip_existing)
    if seed_source == "random":
        progress.note(f"seed {seed} chosen at random (pass --seed {seed} to repeat this run)")

    report = AugmentReport(
        src=str(src), out=str(out_path), pipeline_file=str(out_path / PIPELINE_FILE),
        seed=int(seed), seed_source=seed_source, workers=0, copies=copies,
        images_found=len(files))
    if shard is not None:
        report.shard = f"{shard[0]}/{shard[1]}"
        report.images_found = sum(in_shard(f.relative.as_posix(), shard) for f in files)
        if not report.images_found:
            progress.note(f"shard {report.shard} holds none of the {len(files)} images")
    report.skipped += [SkippedFile(o.relative.as_posix(), not_an_image(o.relative))
                       for o in others
                       if shard is None or in_shard(o.relative.as_posix(), shard)]
    plan = plan_tasks(files, out_path, masks_root, copies, include_original, image_format,
                      skip_existing, shard)
    tasks = plan.tasks
    report.skipped.extend(plan.skipped)
    report.already_done += plan.already_done
    if pool is not None and len(tasks) < 2:
        pool = None  # not worth a round trip to another process
    report.workers = min(pool.workers, len(tasks)) if pool is not None else 1

    out_path.mkdir(parents=True, exist_ok=True)
    header = (f"# The resolved pipeline of `tb augment {src} {out}` (seed {seed}).\n"
              f"# Run it again with: tb augment SRC OUT --pipeline {out_path / PIPELINE_FILE}\n")
    yaml_text = pipeline_to_yaml(pipeline, seed=int(seed), header=header)
    atomic_write_text(out_path / PIPELINE_FILE, yaml_text)

    job = _Job(secrets.token_hex(8), pipeline, int(seed), quality)
    results: dict[str, _Result] = {}
    want_preview = preview is not None or tensorboard is not None
    start = time.perf_counter()
    progress.start("augment", total=len(tasks), unit="images")
    try:
        for result in run_tasks(tasks, job, pool):
            if want_preview:  # only then are the results needed after the run
                results[result.relative] = result
            report.images_read += result.read
            report.images_written += result.written
            report.masks_written += result.masks
            report.originals_copied += result.originals
            if result.reason is not None:
                report.skipped.append(SkippedFile(result.relative, result.reason))
            progress.advance(1)
    finally:
        progress.finish()
    report.seconds = round(time.perf_counter() - start, 3)
    report.images_per_second = round(report.images_read / report.seconds, 2) \
        if report.seconds > 0 else 0.0
    report.skipped.sort(key=lambda s: s.path)
    for item in report.skipped:
        key = item.reason.split(":", 1)[0] if item.reason.startswith("failed") else item.reason
        report.skip_reasons[key] = report.skip_reasons.get(key, 0) + 1

    if want_preview:
        grid = _preview_grid(tasks, results, preview_count, 1 + min(copies, 3))
        if grid is None:
            progress.note("no preview: no image was augmented")
        else:
            if preview is not None:
                report.preview = str(write_image(preview, grid))
            if tensorboard is not None:
                from toolbox.tensorboard import add_image, summary_writer

                with summary_writer(tensorboard) as writer:
                    add_image(writer, "augment/preview", grid, step=0)
                    writer.add_text("augment/pipeline", "```\n" + yaml_text + "\n```", 0)
                report.tensorboard = str(tensorboard)
    return report
