"""The folder runner behind `tb augment SRC OUT`: plan, run in worker processes, report.

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

import contextlib
import hashlib
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolbox.augment._masks import augment_with_mask
from toolbox.augment._spec import AugmentSpecError, Pipeline, pipeline_to_yaml
from toolbox.devices import default_workers
from toolbox.errors import ToolboxError
from toolbox.fileio import atomic_path, atomic_write_text
from toolbox.images import (
    ImageFile,
    ImageReadError,
    collect_images,
    is_glob,
    not_an_image,
    read_image,
    read_mask,
    source_root,
    write_image,
)
from toolbox.progress import NullProgress, Progress
from toolbox.sources import SkippedFile

if TYPE_CHECKING:
    import numpy as np

PIPELINE_FILE = "pipeline.yaml"
FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp"}
MASKS_DIR = "masks"
IMAGES_DIR = "images"
_IN_FLIGHT_PER_WORKER = 4  # enough to keep workers busy, small enough to keep memory flat
_CHUNK = 8  # files per round trip to a worker, at most


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


@dataclass(frozen=True)
class _Task:
    """One input file and the outputs to make from it (plain strings: cheap to pickle)."""

    path: str
    relative: str  # POSIX path relative to SRC: part of the seed
    mask: str | None
    copies: tuple[tuple[int, str, str | None], ...]  # (copy index, image dest, mask dest)
    original: tuple[str, str | None] | None  # (image dest, mask dest) for --include-original


@dataclass(frozen=True)
class _Result:
    relative: str
    read: bool
    written: int = 0
    masks: int = 0
    originals: int = 0
    reason: str | None = None


def derive_seed(seed: int, relative: str, copy: int) -> int:
    """The seed of one output: a hash of (run seed, relative path, copy index)."""
    digest = hashlib.blake2b(f"{seed}\0{relative}\0{copy}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def in_shard(relative: str, shard: tuple[int, int]) -> bool:
    """Whether the file at `relative` (POSIX, relative to SRC) belongs to shard (K, N).

    A hash rather than a position in the sorted list: a file's shard does not change when
    other files are added or removed, so a retried shard redoes only its own files.
    """
    index, count = shard
    digest = hashlib.blake2b(relative.encode(), digest_size=8, person=b"tb-shard").digest()
    return int.from_bytes(digest, "little") % count == index


# ------------------------------------------------------------------------------ workers
@dataclass(frozen=True)
class _Job:
    """What every task of one run shares; workers build its augmenter once and cache it."""

    key: str  # unique per run, so a warm worker never reuses another run's augmenter
    pipeline: Pipeline
    seed: int
    quality: int | None


_WORKER: dict[str, Any] = {}


def _keep_image_buffers_in_heap() -> None:
    """Stop glibc from returning every freed image-sized buffer to the kernel.

    Each augmented image allocates several arrays of megabytes (float noise, warped copies).
    By default glibc maps each one afresh and unmaps it on free, so every image pays page
    faults and page zeroing for all of them: measured here, a third of a worker's time. With a
    high mmap threshold they are reused from the heap; the trim threshold bounds what a worker
    keeps (a fixed amount, whatever the folder's size).
    """
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    import ctypes

    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(m_mmap_threshold, 64 << 20)
        libc.mallopt(m_trim_threshold, 128 << 20)


def _init_process() -> None:
    """Pool initializer: workers already use every core, so OpenCV's own thread pool would
    only oversubscribe them. Ctrl-C is left to the main process, which cancels the queued
    files; a worker finishes the file it is writing instead of printing a traceback."""
    import cv2

    cv2.setNumThreads(0)
    _keep_image_buffers_in_heap()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _warm() -> int:
    """A no-op task that makes the pool start its processes (and import imgaug) early."""
    import imgaug.augmenters  # noqa: F401  (already imported by the fork server's preload)

    return os.getpid()


def _configure(job: _Job) -> None:
    if _WORKER.get("key") != job.key:
        from toolbox.augment._pipeline import build_pipeline

        _WORKER.clear()
        _WORKER.update(key=job.key, augmenter=build_pipeline(job.pipeline, check=False),
                       seed=job.seed, quality=job.quality)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _augment(image: np.ndarray, mask: np.ndarray | None, seed: int
             ) -> tuple[np.ndarray, np.ndarray | None]:
    return augment_with_mask(_WORKER["augmenter"], image, mask, seed)


def _write_mask(dest: str, mask: np.ndarray) -> None:
    import numpy as np

    dtype = np.uint8 if int(mask.max(initial=0)) < 256 else np.uint16
    write_image(dest, mask.astype(dtype))


def _copy_file(src: str, dest: str) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _process_chunk(tasks: list[_Task], job: _Job) -> list[_Result]:
    """A few files per round trip: per-file futures cost the main process (which shares the
    cores with the workers) about a millisecond each."""
    return [_process(task, job) for task in tasks]


def _process(task: _Task, job: _Job) -> _Result:
    """Read one input, write its augmented copies (and masks, and the original)."""
    _configure(job)
    try:
        image = read_image(task.path)
    except ImageReadError as exc:
        return _Result(task.relative, read=False, reason=exc.reason)
    mask = None
    if task.mask is not None:
        if not Path(task.mask).is_file():
            return _Result(task.relative, read=True, reason="no mask with the same name")
        try:
            mask = read_mask(task.mask)
        except ImageReadError as exc:
            return _Result(task.relative, read=True, reason=f"mask: {exc.reason}")
        if mask.shape != image.shape[:2]:
            return _Result(task.relative, read=True, reason="mask size differs from image")
    written = masks = originals = 0
    try:
        for copy, dest, mask_dest in task.copies:
            out, out_mask = _augment(image, mask, derive_seed(_WORKER["seed"], task.relative,
                                                              copy))
            write_image(dest, out, quality=_WORKER["quality"])
            written += 1
            if mask_dest is not None and out_mask is not None:
                _write_mask(mask_dest, out_mask)
                masks += 1
        if task.original is not None:
            _copy_file(task.path, task.original[0])
            originals += 1
            if task.original[1] is not None and task.mask is not None:
                _copy_file(task.mask, task.original[1])
    except Exception as exc:  # one bad file must not stop the run; it is reported instead
        return _Result(task.relative, read=True, written=written, masks=masks,
                       originals=originals, reason=f"failed: {_first_line(exc)}")
    return _Result(task.relative, True, written, masks, originals)


# ------------------------------------------------------------------------------ planning
def _source_root(src: str | Path) -> tuple[Path, bool]:
    """The folder outputs are relative to, and whether SRC is a single file."""
    return source_root(src).resolve(), not is_glob(src) and Path(src).is_file()


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_location(src: str | Path, out: str | Path, masks: str | Path | None = None
                       ) -> None:
    """Refuse an OUT that is SRC (or the masks folder), or inside it, where a later run or
    this one would read outputs back as inputs."""
    root, single_file = _source_root(src)
    out_path = Path(out).resolve()
    if out_path.exists() and not out_path.is_dir():
        raise ToolboxError(f"OUT {out} is a file", "pass a folder for the outputs")
    if out_path == root or (not single_file and _is_within(out_path, root)):
        raise ToolboxError(
            f"OUT {out} is {'the same as' if out_path == root else 'inside'} the source "
            f"folder {root}", "pick an OUT outside SRC so outputs are never read back as inputs")
    if masks is not None:
        mask_root = Path(masks).resolve()
        if _is_within(out_path, mask_root):
            raise ToolboxError(f"OUT {out} is inside the masks folder {mask_root}",
                               "pick an OUT outside the masks folder")


def _output_ext(relative: Path, image_format: str | None) -> str:
    if image_format is None:
        return relative.suffix
    return FORMATS[image_format]


def _plan(files: list, out: Path, masks_root: Path | None, copies: int,
          include_original: bool, image_format: str | None, skip_existing: bool,
          report: AugmentReport, shard: tuple[int, int] | None = None) -> list[_Task]:
    """The tasks of this run (of its shard). Every shard checks every file's output names,
    so each skips the same name clashes an unsharded run would."""
    images_out = out / IMAGES_DIR if masks_root is not None else out
    masks_out = out / MASKS_DIR
    inputs = {f.path for f in files}
    seen: dict[Path, str] = {}
    tasks: list[_Task] = []
    for f in files:
        rel = f.relative
        rel_posix = rel.as_posix()
        mask = str(masks_root / rel.with_suffix(".png")) if masks_root is not None else None
        ext = _output_ext(rel, image_format)
        planned: list[tuple[int, Path, Path | None]] = []
        for k in range(copies):
            name = f"{rel.stem}_aug{k}"
            dest = images_out / rel.parent / f"{name}{ext}"
            mask_dest = masks_out / rel.parent / f"{name}.png" if masks_root else None
            planned.append((k, dest, mask_dest))
        original = None
        if include_original:
            original = (images_out / rel, masks_out / rel.with_suffix(".png")
                        if masks_root else None)
        dests = [d for _, d, m in planned for d in (d, m) if d is not None]
        if original:
            dests += [d for d in original if d is not None]
        if mask is not None:
            inputs.add(Path(mask).resolve())
        clash = next((d for d in dests if d.resolve() in inputs), None)
        if clash is not None:
            raise ToolboxError(f"output {clash} would overwrite an input",
                               "pick an OUT folder outside SRC and the masks folder")
        other = next((seen[d] for d in dests if d in seen), None)
        mine = shard is None or in_shard(rel_posix, shard)
        if other is not None:
            if mine:
                report.skipped.append(SkippedFile(rel_posix, f"same output name as {other}"))
            continue
        seen.update(dict.fromkeys(dests, rel_posix))
        if not mine:
            continue
        if skip_existing:
            planned = [(k, d, m) for k, d, m in planned
                       if not (d.exists() and (m is None or m.exists()))]
            if original and all(d is None or d.exists() for d in original):
                original = None
            if not planned and original is None:
                report.already_done += 1
                continue
        tasks.append(_Task(
            str(f.path), rel_posix, mask,
            tuple((k, str(d), str(m) if m else None) for k, d, m in planned),
            (str(original[0]), str(original[1]) if original[1] else None) if original else None,
        ))
    return tasks


def _check_out_is_this_run(out: Path, pipeline: Pipeline, seed: int,
                           recorded: Pipeline | None, resuming: bool) -> None:
    """Refuse an OUT that holds another run's outputs (another pipeline or seed, or files tb
    did not record): mixed silently, OUT/pipeline.yaml would describe only some of its images,
    and re-running it would not reproduce them. The same pipeline and seed is the same run
    (a resumed one, or another shard of it), so it may write there; so may a resumed run
    whose record is unreadable, as its seed had to be given again (see `_recorded`).

    Raises:
        ToolboxError: OUT is not empty and holds something else.
    """
    if not out.is_dir() or not any(not p.name.startswith(".") for p in out.iterdir()):
        return
    if recorded is not None and recorded.steps == pipeline.steps and recorded.seed == seed:
        return
    if recorded is None and resuming and (out / PIPELINE_FILE).is_file():
        return
    if recorded is None:
        what = "files that no tb augment run recorded"
    elif recorded.steps != pipeline.steps:
        what = f"the outputs of another pipeline (see {out / PIPELINE_FILE})"
    else:
        what = f"the outputs of seed {recorded.seed}, not {seed}"
    raise ToolboxError(f"{out} already holds {what}",
                       "write to a new folder, resume that run with --skip-existing (same "
                       "pipeline and seed), or pass --overwrite to write over it anyway")


def _recorded(out: Path, need_seed: bool) -> Pipeline | None:
    """The pipeline (and seed) in OUT/pipeline.yaml from an earlier, maybe interrupted, run.

    Raises:
        AugmentSpecError: the file is unreadable and its seed is needed; resuming with a new
            random seed would mix two runs' outputs, so the user must choose.
    """
    from toolbox.augment._registry import resolve_pipeline
    from toolbox.augment._spec import load_pipeline_file

    path = out / PIPELINE_FILE
    if not path.is_file():
        return None
    try:
        return resolve_pipeline(load_pipeline_file(path))
    except AugmentSpecError as exc:
        if not need_seed:
            return None
        raise AugmentSpecError(
            f"--skip-existing cannot resume: {path} is unreadable ({exc.message})",
            "pass the earlier run's --seed, or write to a fresh OUT") from None


def _mp_context() -> multiprocessing.context.BaseContext:
    # fork is the cheapest start (workers inherit the imgaug this process imported to check the
    # spec), and safe while no library has started threads here: not after torch is imported.
    # Otherwise forkserver forks workers from a clean server that imports imgaug once; spawn
    # off Linux.
    if sys.platform.startswith("linux"):
        if "torch" not in sys.modules:
            return multiprocessing.get_context("fork")
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["imgaug.augmenters", "toolbox.augment._run"])
        return ctx
    return multiprocessing.get_context("spawn")


class _WarmPool:
    """A process pool whose workers start (and import imgaug) in the background while the
    main process plans the run, so start-up overlaps useful work."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        context = _mp_context()
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                            initializer=_init_process)
        if context.get_start_method() == "fork":
            # Forking from a second thread while this one runs would copy its locks mid-use.
            self._starter = None
            self._start()
            return
        # Starting a process blocks until the fork server has imported imgaug: do it from a
        # thread so the main thread is not held up.
        self._starter = threading.Thread(target=self._start, daemon=True)
        self._starter.start()

    def _start(self) -> None:
        with contextlib.suppress(Exception):  # a broken pool shows on the first real task
            for _ in range(self.workers):
                self.executor.submit(_warm)

    def close(self, cancel: bool = False) -> None:
        if self._starter is not None:
            self._starter.join()
        self.executor.shutdown(wait=not cancel, cancel_futures=cancel)


def _run_tasks(tasks: list[_Task], job: _Job, pool: _WarmPool | None):
    """Yield one _Result per task, in completion order (in this process without a pool)."""
    if pool is None:
        try:
            for task in tasks:
                yield _process(task, job)
        finally:
            _WORKER.clear()
        return
    # Chunks small enough that every worker gets several (and progress moves), large enough
    # that round trips are rare.
    size = max(1, min(_CHUNK, len(tasks) // (pool.workers * _IN_FLIGHT_PER_WORKER)))
    chunks = (tasks[i:i + size] for i in range(0, len(tasks), size))
    pending: set[Future] = set()
    while True:
        while len(pending) < pool.workers * _IN_FLIGHT_PER_WORKER:
            chunk = next(chunks, None)
            if chunk is None:
                break
            pending.add(pool.executor.submit(_process_chunk, chunk, job))
        if not pending:
            break
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            try:
                yield from fut.result()
            except BrokenProcessPool:
                raise ToolboxError("a worker process died while augmenting",
                                   "it may have run out of memory: try fewer --workers, "
                                   "or --skip-existing to resume") from None


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
            see `_check_out_is_this_run`).
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
    pipeline = _checked_pipeline(spec)
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


def _checked_pipeline(spec: str | Path) -> Pipeline:
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

    recorded = _recorded(out_path, need_seed=skip_existing and seed is None
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
        _check_out_is_this_run(out_path, pipeline, int(seed), recorded, skip_existing)
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
    tasks = _plan(files, out_path, masks_root, copies, include_original, image_format,
                  skip_existing, report, shard)
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
        for result in _run_tasks(tasks, job, pool):
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
