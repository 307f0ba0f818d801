"""One setting measured: the step a runtime takes (inference, or a training step of forward,
backward and optimizer step as in timm's `benchmark.py`), timed with its peak memory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolbox.benchmark._memory import PeakMemory
from toolbox.benchmark._timing import Timing, time_steps

if TYPE_CHECKING:
    import torch
    from torch import nn

    from toolbox.train.engine import Amp


@dataclass
class Runner:
    """A model ready to run in one runtime: a torch module (eager or TorchScript) or an
    onnxruntime model; `reason` says why the runtime cannot run it (an export that failed)."""

    runtime: str
    module: Any = None  # nn.Module or a TorchScript ScriptModule
    onnx: Any = None  # toolbox.inference.exported.OnnxModel
    parity: float | None = None  # top-1 agreement of the export with the model
    reason: str | None = None


@dataclass
class Measured:
    """What `measure` found for one setting."""

    timing: Timing
    peak_mem_mb: float | None


@dataclass(frozen=True)
class StepPlan:
    """The settings one measurement runs with (a cell of the grid)."""

    mode: str  # infer or train
    batch_size: int
    img_size: int
    channels_last: bool
    compile: bool
    warmup: int
    min_steps: int
    min_time: float


def _sync(device: torch.device) -> Callable[[], None]:
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _infer_step(model: Any, batch: torch.Tensor, amp: Amp) -> Callable[[], int]:
    size = batch.shape[0]

    def step() -> int:
        with amp.autocast():
            model(batch)
        return size

    return step


def _first_tensor(output: Any) -> torch.Tensor:
    # Models that return (logits, aux) train on the first, as timm's benchmark does.
    return output[0] if isinstance(output, tuple | list) else output


def _train_step(model: nn.Module, batch: torch.Tensor, amp: Amp, classes: int
                ) -> Callable[[], int]:
    import torch

    size = batch.shape[0]
    target = torch.randint(0, classes, (size,), device=batch.device)
    loss_fn = torch.nn.CrossEntropyLoss()
    # timm's benchmark.py trains with create_optimizer_v2(opt="sgd", lr=1e-4): SGD with
    # Nesterov momentum 0.9.
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    scaler = amp.scaler

    def step() -> int:
        optimizer.zero_grad(set_to_none=True)
        with amp.autocast():
            loss = loss_fn(_first_tensor(model(batch)), target)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return size

    return step


def _onnx_step(runner: Runner, plan: StepPlan) -> Callable[[], int]:
    import numpy as np

    rng = np.random.default_rng(0)
    batch = rng.standard_normal((plan.batch_size, 3, plan.img_size, plan.img_size),
                                dtype=np.float32)
    session, name = runner.onnx.session, runner.onnx.input_name

    def step() -> int:
        session.run(None, {name: batch})
        return plan.batch_size

    return step


def measure(runner: Runner, plan: StepPlan, *, device: torch.device, amp: Amp) -> Measured:
    """Time `plan` on `runner`: random input made once on `device` (as timm's benchmark
    does), `plan.warmup` untimed steps (compilation and allocator warm-up happen there), then
    the timed ones; peak memory over the warm-up and the timed steps."""
    import torch

    memory = PeakMemory(device)
    if runner.runtime == "onnxruntime":
        step = _onnx_step(runner, plan)
        context: contextlib.AbstractContextManager = contextlib.nullcontext()
    else:
        layout = torch.channels_last if plan.channels_last else torch.contiguous_format
        model = runner.module.to(device, memory_format=layout).eval()
        batch = torch.randn(plan.batch_size, 3, plan.img_size, plan.img_size, device=device)
        batch = batch.contiguous(memory_format=layout)
        classes = 0
        if plan.mode == "train":  # the head's width, for the random targets
            with torch.no_grad():
                classes = _first_tensor(model(batch[:1])).shape[1]
        model.train(plan.mode == "train")
        if plan.compile:
            # A fresh compile for each setting: dynamo's cache of earlier shapes and modes
            # would otherwise fill up (8 entries) and quietly leave later settings eager.
            torch.compiler.reset()
            model = torch.compile(model)
        if plan.mode == "train":
            step = _train_step(model, batch, amp, classes)
            context = contextlib.nullcontext()
        else:
            step = _infer_step(model, batch, amp)
            context = torch.inference_mode()
    memory.start()
    try:
        with context:
            timing = time_steps(step, warmup=plan.warmup, min_steps=plan.min_steps,
                                min_time=plan.min_time, sync=_sync(device))
        return Measured(timing, memory.peak_mb())
    finally:
        if runner.module is not None:  # the last step's gradients would weigh on the next
            for param in runner.module.parameters():
                param.grad = None
