"""Devices and what follows from them: `--device` to a torch.device (with clear errors), the
autocast dtype and the default worker count, each rule written once for every command."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from toolbox.errors import ToolboxError, UsageError

if TYPE_CHECKING:
    import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; an unavailable device is a ToolboxError."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise UsageError(f"unknown device '{spec}'", "use auto, cpu, cuda, cuda:N or mps",
                         param="--device") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ToolboxError("CUDA was asked for but no CUDA device is available",
                               "use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ToolboxError(f"no CUDA device {device.index}: "
                               f"{torch.cuda.device_count()} available", "use --device cuda:0")
    elif device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ToolboxError("MPS was asked for but is not available", "use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device '{spec}'", "use auto, cpu, cuda, cuda:N or mps",
                         param="--device")
    return device


def autocast_dtype(device_type: str, requested: str = "auto") -> torch.dtype:
    """The mixed-precision dtype, one rule for training and inference: float16 on CUDA unless
    `requested` is bf16; bfloat16 on the CPU and MPS (float16 there would need loss scaling
    for training, which tb does with CUDA's GradScaler only; inference follows so a model is
    evaluated in the precision it was trained in)."""
    import torch

    if device_type == "cuda" and requested in ("auto", "fp16"):
        return torch.float16
    return torch.bfloat16


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), as oneDNN sees it."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_off_reason(device_type: str, requested: str = "auto") -> str | None:
    """Why `--amp` should leave autocast off here, or None when it helps.

    On a CPU without bfloat16 instructions (AVX2 only) bfloat16 is emulated: a
    tf_efficientnet_lite0 forward pass measured 9x slower than float32 there (16 s against
    1.7 s of CPU per batch of 64 at 32 px). Asking for bf16 explicitly still forces it.
    """
    if device_type == "cpu" and requested == "auto" and not cpu_has_bf16():
        return "this CPU has no bfloat16 instructions, so autocast would be slower"
    return None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, as under taskset or a cgroup)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers(cap: int | None = None) -> int:
    """The default number of worker processes: one per usable core, at most `cap`."""
    cores = usable_cores()
    return cores if cap is None else max(1, min(cap, cores))


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 256 << 20


def keep_freed_memory(limit: int = KEEP_FREED_BYTES) -> bool:
    """Let glibc keep freed blocks up to `limit` bytes for reuse instead of handing them back to
    the kernel; whether it took effect (glibc only).

    A CPU training step allocates its activations and gradients afresh: blocks above glibc's
    mmap threshold are mapped and unmapped every step, and every page of them is faulted in
    and zeroed again. resnet18 at 64 px in batches of 64 took 25,000 page faults and 70-90 ms
    of kernel time a step that way (4% of its CPU time), about 1,000 and 6 ms with this. The
    process then holds its working set between steps, as PyTorch's CUDA allocator does on the
    GPU: at most `limit` of free memory, 140 MB more peak resident memory in the short-run
    benchmark (1.30 against 1.16 GB).
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)
                    and libc.mallopt(_M_TRIM_THRESHOLD, limit))
    except (OSError, AttributeError):
        return False
