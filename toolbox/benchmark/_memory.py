"""Peak memory of one setting: CUDA's max allocated, or the growth of the process's peak RSS.

`getrusage`'s ru_maxrss only ever grows, so after a bigger setting it says nothing about a
smaller one. On Linux, writing 5 to /proc/self/clear_refs resets the peak (VmHWM) to the
current RSS; the kernel then tracks the new peak at no cost to the timed steps, unlike a sampling
thread that would take the GIL and a core from them. Freed heap is handed back to the kernel
first (glibc's malloc_trim), so memory a previous setting freed but the allocator kept does not
hide this setting's growth.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _trim_heap() -> None:
    if platform.libc_ver()[0] == "glibc":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """`start()` before the warm-up, `peak_mb()` after the timed steps."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base_kb: int | None = None

    def start(self) -> None:
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _trim_heap()
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            self.base_kb = None  # not Linux, or not allowed: no honest CPU figure
            return
        self.base_kb = _status_kb("VmRSS")

    def peak_mb(self) -> float | None:
        """MB: CUDA's max allocated since `start`, or the RSS peak above the RSS at `start`."""
        import torch

        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        peak = _status_kb("VmHWM")
        if self.base_kb is None or peak is None:
            return None
        return max(0, peak - self.base_kb) / 1024
