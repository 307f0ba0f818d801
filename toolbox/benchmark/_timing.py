"""The timing loop, as timm's `benchmark.py` runs it: warm-up steps, then timed steps (each read
off `time.perf_counter` after a CUDA synchronise) until both a count and a time are reached."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Timing:
    """The timed steps of one setting."""

    steps: list[float]  # seconds per step
    elapsed: float  # wall time of the timed loop (what images/s divides by, as timm does)
    images: int  # images the timed steps processed

    @property
    def img_per_s(self) -> float:
        return self.images / self.elapsed

    def quantiles_ms(self) -> tuple[float, float, float, float, float]:
        """(median, first quartile, third quartile, min, max) of the step time, in ms."""
        ms = sorted(s * 1000 for s in self.steps)
        if len(ms) == 1:
            return ms[0], ms[0], ms[0], ms[0], ms[0]
        q1, median, q3 = statistics.quantiles(ms, n=4, method="inclusive")
        return median, q1, q3, ms[0], ms[-1]


def time_steps(step: Callable[[], int], *, warmup: int, min_steps: int, min_time: float,
               sync: Callable[[], None]) -> Timing:
    """Run `step` (it returns the images it processed) `warmup` times untimed, then until at
    least `min_steps` steps and `min_time` seconds are timed.

    The clock is read only between steps, after `sync` (CUDA's synchronise; a no-op on the
    CPU), so queued GPU work is counted in the step that queued it, as in timm's loop.
    """
    for _ in range(warmup):
        step()
    sync()
    steps: list[float] = []
    images = 0
    clock = time.perf_counter
    start = clock()
    while len(steps) < min_steps or clock() - start < min_time:
        begin = clock()
        images += step()
        sync()
        steps.append(clock() - begin)
    return Timing(steps, clock() - start, images)
