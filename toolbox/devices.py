"""Turning `--device auto|cpu|cuda[:N]|mps` into a torch.device, with clear errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolbox.errors import ToolboxError

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
        raise ToolboxError(f"unknown device '{spec}'",
                           "use auto, cpu, cuda, cuda:N or mps") from exc
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
        raise ToolboxError(f"unsupported device '{spec}'", "use auto, cpu, cuda, cuda:N or mps")
    return device
