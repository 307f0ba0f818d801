"""The process pool of `tb augment`: workers started early, chunks of files kept in flight."""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from toolbox.augment._worker import (
    _WORKER,
    _init_process,
    _Job,
    _process,
    _process_chunk,
    _Result,
    _Task,
    _warm,
)
from toolbox.errors import ToolboxError

_IN_FLIGHT_PER_WORKER = 4  # enough to keep workers busy, small enough to keep memory flat
_CHUNK = 8  # files per round trip to a worker, at most


def _mp_context() -> multiprocessing.context.BaseContext:
    # fork is the cheapest start (workers inherit the imgaug this process imported to check the
    # spec), and safe while no library has started threads here: not after torch is imported.
    # Otherwise forkserver forks workers from a clean server that imports imgaug once; spawn
    # off Linux.
    if sys.platform.startswith("linux"):
        if "torch" not in sys.modules:
            return multiprocessing.get_context("fork")
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["imgaug.augmenters", "toolbox.augment._worker"])
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


def run_tasks(tasks: list[_Task], job: _Job, pool: _WarmPool | None) -> Iterator[_Result]:
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
