"""One training epoch and one validation pass: mixed precision, accumulation, clipping."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from toolbox import interrupt
from toolbox.devices import autocast_dtype, autocast_off_reason
from toolbox.errors import ToolboxError
from toolbox.models import ModelMeta
from toolbox.preprocess import normalize_uint8
from toolbox.progress import NullProgress, Progress
from toolbox.train.metrics import Meter
from toolbox.train.mixing import hard_labels


class NonFiniteLoss(ToolboxError):
    """The loss became NaN or infinite: training cannot go on from these weights."""


@dataclass
class Amp:
    """Autocast settings: float16 + GradScaler on CUDA, bfloat16 elsewhere or when asked."""

    enabled: bool
    device_type: str
    dtype: torch.dtype | None = None
    scaler: Any = None
    note: str = ""

    @property
    def label(self) -> str:
        if not self.enabled:
            return "off (float32)" + self.note
        name = {torch.float16: "float16", torch.bfloat16: "bfloat16"}[self.dtype]
        return name + (" + GradScaler" if self.scaler is not None else "") + self.note

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def amp_setup(device: torch.device, enabled: bool, dtype: str = "auto") -> Amp:
    """Pick the autocast dtype: fp16 (with loss scaling) on CUDA unless bf16 is asked for;
    bfloat16 on the CPU and MPS, where float16 autocast does not apply; off where it would
    only slow things down (`autocast_off_reason`)."""
    if not enabled:
        return Amp(False, device.type)
    off = autocast_off_reason(device.type, dtype)
    if off is not None:
        return Amp(False, device.type, note=f" ({off}; --amp-dtype bf16 forces it)")
    chosen = autocast_dtype(device.type, dtype)
    if chosen == torch.float16:  # CUDA: float16 needs loss scaling
        return Amp(True, device.type, chosen, torch.amp.GradScaler("cuda"))
    note = " (float16 needs CUDA)" if dtype == "fp16" else ""
    return Amp(True, device.type, chosen, note=note)


def to_input(batch: torch.Tensor, meta: ModelMeta, device: torch.device,
             channels_last: bool) -> torch.Tensor:
    """uint8 (N, C, H, W) -> normalised float32 on `device` (normalised there: 4x less to copy).
    Float batches are cached features (`train.feature_data`), the head's input as they are."""
    if batch.is_floating_point():
        return batch.to(device, non_blocking=True)
    x = normalize_uint8(batch.to(device, non_blocking=True), meta)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@dataclass
class EpochStats:
    """Throughput of one training epoch on this rank."""

    images: int
    seconds: float


def train_epoch(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                epoch: int, num_batches: int, optimizer: torch.optim.Optimizer,
                schedule: Any, loss_fn: nn.Module, amp: Amp, meta: ModelMeta,
                device: torch.device, meter: Meter, grad_accum: int = 1,
                clip_grad: float | None = None, channels_last: bool = False,
                progress: Progress | None = None, label: str = "",
                on_first_batch: Callable[[torch.Tensor], None] | None = None,
                no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
                all_finite: Callable[[torch.Tensor], bool] | None = None,
                after_step: Callable[[], None] | None = None,
                mix: Callable[[torch.Tensor, torch.Tensor],
                              tuple[torch.Tensor, torch.Tensor]] | None = None) -> EpochStats:
    """Train one epoch; the optimizer steps every `grad_accum` batches (and at the end).

    `after_step` runs after every optimizer step (the weight EMA's update). `mix` turns a
    normalised batch and its labels into mixed inputs and the soft targets `loss_fn` takes;
    accuracy is then counted against each soft target's largest class.

    Raises:
        NonFiniteLoss: the loss was NaN or infinite (no optimizer step is taken with it).
    """
    progress = progress or NullProgress()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    images = 0
    progress.start(label or f"epoch {epoch}", total=num_batches, unit="batches")
    start = time.perf_counter()
    try:
        for step, (batch, targets) in enumerate(batches):
            interrupt.check()
            if step == 0 and on_first_batch is not None:
                on_first_batch(batch)
            x = to_input(batch, meta, device, channels_last)
            y = targets.to(device, non_blocking=True)
            if mix is not None:
                x, y = mix(x, y)
            boundary = (step + 1) % grad_accum == 0 or step + 1 == num_batches
            sync = contextlib.nullcontext() if boundary or no_sync is None else no_sync()
            with sync:
                with amp.autocast():
                    logits = model(x)
                    loss = loss_fn(logits, y)
                finite = all_finite(loss) if all_finite else bool(torch.isfinite(loss))
                if not finite:
                    value = loss.item()
                    what = (f"the loss became {value}" if not math.isfinite(value)
                            else "the loss became non-finite in another process")
                    raise NonFiniteLoss(f"{what} at epoch {epoch}, step {step + 1}")
                scaled = loss / grad_accum
                if amp.scaler is not None:
                    amp.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            if boundary:
                _optimizer_step(optimizer, params, amp, clip_grad)
                schedule.step_batch()
                if after_step is not None:
                    after_step()
            meter.update(loss.detach(), logits.detach().float(), hard_labels(y))
            images += targets.shape[0]
            progress.advance()
    finally:
        progress.finish()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return EpochStats(images, time.perf_counter() - start)


def _optimizer_step(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], amp: Amp,
                    clip_grad: float | None) -> None:
    if amp.scaler is not None:
        if clip_grad:
            amp.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip_grad)
        amp.scaler.step(optimizer)
        amp.scaler.update()
    else:
        if clip_grad:
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip_grad)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def validate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
             loss_fn: nn.Module, meta: ModelMeta, device: torch.device, meter: Meter,
             channels_last: bool = False) -> None:
    """Validation in eval mode and float32 (no autocast), so its accuracy is exactly what
    `tb evaluate` measures on the saved model."""
    model.eval()  # the caller puts it back in (partly frozen) training mode each epoch
    for batch, targets in batches:
        interrupt.check()
        x = to_input(batch, meta, device, channels_last)
        y = targets.to(device, non_blocking=True)
        logits = model(x).float()
        meter.update(loss_fn(logits, y), logits, y)
