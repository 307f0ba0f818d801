"""The worker side of `tb augment`: read one input, write its augmented copies, report back.

Reproducibility: before each copy the augmenter tree is re-seeded with `derive_seed` of (seed,
relative path, copy index), so the bytes written do not depend on which worker got the file.
Tasks and results are plain strings and counters: cheap to send between processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolbox.augment._masks import augment_with_mask
from toolbox.augment._spec import Pipeline
from toolbox.fileio import atomic_path
from toolbox.images import ImageReadError, read_image, read_mask, write_image

if TYPE_CHECKING:
    import numpy as np


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
