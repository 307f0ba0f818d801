"""Optimizer and learning-rate scheduler registries, and the schedule wrapper the loop steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from toolbox.errors import ToolboxError

WARMUP_START_FACTOR = 0.01


@dataclass(frozen=True)
class OptimInfo:
    """One `--opt` choice: `build(param_groups, lr=, momentum=, fused=)` makes the optimizer."""

    name: str
    description: str
    build: Callable[..., torch.optim.Optimizer]


OPTIMIZERS: dict[str, OptimInfo] = {info.name: info for info in (
    OptimInfo("adamw", "Adam with decoupled weight decay (default)",
              lambda groups, *, lr, momentum, fused: torch.optim.AdamW(groups, lr=lr,
                                                                       fused=fused)),
    OptimInfo("adam", "Adam (weight decay added to the gradient)",
              lambda groups, *, lr, momentum, fused: torch.optim.Adam(groups, lr=lr,
                                                                      fused=fused)),
    OptimInfo("sgd", "SGD with Nesterov momentum (--momentum)",
              lambda groups, *, lr, momentum, fused: torch.optim.SGD(
                  groups, lr=lr, momentum=momentum, nesterov=momentum > 0, fused=fused)),
)}


@dataclass(frozen=True)
class SchedPlan:
    """What a scheduler entry needs to build itself (epochs after warm-up, in `main_epochs`)."""

    epochs: int
    main_epochs: int
    warmup_epochs: int
    steps_per_epoch: int
    step_size: int | None
    milestones: list[int]
    gamma: float


def _onecycle(optimizer: torch.optim.Optimizer, plan: SchedPlan) -> Any:
    from torch.optim import lr_scheduler as S

    max_lr = [group["lr"] for group in optimizer.param_groups]
    pct = plan.warmup_epochs / plan.epochs if plan.warmup_epochs else 0.3
    return S.OneCycleLR(optimizer, max_lr=max_lr,
                        total_steps=max(2, plan.epochs * plan.steps_per_epoch),
                        pct_start=min(max(pct, 0.01), 0.99))


def _multistep(optimizer: torch.optim.Optimizer, plan: SchedPlan) -> Any:
    from torch.optim import lr_scheduler as S

    milestones = plan.milestones or [plan.epochs // 2, plan.epochs * 3 // 4]
    return S.MultiStepLR(optimizer, milestones=sorted(
        {max(1, m - plan.warmup_epochs) for m in milestones}), gamma=plan.gamma)


def _sched(name: str, *args: Any, **kwargs: Any) -> Any:
    from torch.optim import lr_scheduler as S

    return getattr(S, name)(*args, **kwargs)


@dataclass(frozen=True)
class SchedInfo:
    """One `--sched` choice and how to build it.

    `per_step` schedulers are stepped after every optimizer step and bring their own warm-up;
    `on_metric` ones are stepped with the validation loss, their warm-up apart; the others
    are chained after a linear warm-up.
    """

    name: str
    description: str
    build: Callable[[torch.optim.Optimizer, SchedPlan], Any]
    per_step: bool = False
    on_metric: bool = False


SCHEDULERS: dict[str, SchedInfo] = {info.name: info for info in (
    SchedInfo("cosine", "cosine annealing to 0 over the epochs after warm-up (default)",
              lambda opt, plan: _sched("CosineAnnealingLR", opt, T_max=plan.main_epochs)),
    SchedInfo("step", "multiply by --gamma every --step-size epochs",
              lambda opt, plan: _sched("StepLR", opt, gamma=plan.gamma, step_size=(
                  plan.step_size or max(1, plan.main_epochs // 3)))),
    SchedInfo("multistep", "multiply by --gamma at --milestones (default: 1/2 and 3/4 of the run)",
              _multistep),
    SchedInfo("exponential", "multiply by --gamma every epoch",
              lambda opt, plan: _sched("ExponentialLR", opt, gamma=plan.gamma)),
    SchedInfo("onecycle", "one-cycle policy, stepped every optimizer step", _onecycle,
              per_step=True),
    SchedInfo("plateau", "divide by 10 when the validation loss stops improving",
              lambda opt, plan: _sched("ReduceLROnPlateau", opt, mode="min", factor=0.1,
                                       patience=2), on_metric=True),
    SchedInfo("none", "constant learning rate (after any warm-up)",
              lambda opt, plan: _sched("ConstantLR", opt, factor=1.0, total_iters=0)),
)}


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Each parameter's layer (0 = the stem) by timm's `group_matcher`, and the top layer.

    Raises:
        ToolboxError: the architecture cannot group its layers (not a timm model).
    """
    if not hasattr(model, "group_matcher"):
        raise ToolboxError(f"--layer-decay needs layer groups, which {type(model).__name__} "
                           "does not define", "use a timm architecture, or drop --layer-decay")
    from timm.models import group_parameters

    layer_of = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    return layer_of, max(layer_of.values())


def param_groups(model: nn.Module, head_prefix: str, *, lr: float, weight_decay: float,
                 backbone_lr_scale: float = 1.0, layer_decay: float | None = None
                 ) -> list[dict[str, Any]]:
    """Head and backbone groups, each split into decayed weights and undecayed biases/norms,
    and with `layer_decay` into layers whose lr shrinks by that factor per layer below the top
    (timm's layer-wise decay, the head being the top layer).

    All parameters are in the optimizer from the start, frozen ones included: they get no
    gradient and so are skipped until `--unfreeze-at`, and resuming needs no special case.
    """
    layer_of, top = layer_ids(model) if layer_decay is not None else ({}, 0)
    buckets: dict[tuple[str, int, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        part = "head" if name == head_prefix or name.startswith(head_prefix + ".") else "backbone"
        layer = top if part == "head" else layer_of.get(name, top)
        decay = param.ndim > 1  # no weight decay on biases and normalisation scales (timm)
        buckets.setdefault((part, layer, decay), []).append(param)
    groups = []
    for (part, layer, decay), params in sorted(buckets.items()):
        scale = backbone_lr_scale if part == "backbone" else 1.0
        named = part
        if layer_decay is not None and part == "backbone":
            scale *= layer_decay ** (top - layer)
            named = f"{part}_layer{layer}"
        groups.append({
            "params": params, "name": f"{named}{'' if decay else '_no_decay'}",
            "weight_decay": weight_decay if decay else 0.0, "lr": lr * scale,
        })
    return groups


def build_optimizer(model: nn.Module, head_prefix: str, *, opt: str = "adamw", lr: float = 1e-3,
                    weight_decay: float = 0.05, momentum: float = 0.9,
                    backbone_lr_scale: float = 1.0, layer_decay: float | None = None
                    ) -> torch.optim.Optimizer:
    """The `opt` optimizer over `param_groups` (the backbone's lr scaled by `backbone_lr_scale`,
    and per layer by `layer_decay`)."""
    groups = param_groups(model, head_prefix, lr=lr, weight_decay=weight_decay,
                          backbone_lr_scale=backbone_lr_scale, layer_decay=layer_decay)
    return OPTIMIZERS[opt].build(groups, lr=lr, momentum=momentum, fused=fused_ok(model))


FUSED_DEVICES = ("cpu", "cuda")


def fused_ok(model: nn.Module) -> bool | None:
    """Whether the optimizer can take its fused kernels: one pass over all parameters instead
    of a loop of small ops, 4-5x faster a step on the CPU (Adam on resnet18: 14 against
    64 ms, a second in every 25 steps). True when every parameter is a float tensor on the
    CPU or CUDA; None (torch's own choice) elsewhere."""
    params = list(model.parameters())
    ok = bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point()
                              for p in params)
    return True if ok else None


class ScheduleSettings(Protocol):
    """The settings a schedule reads (`FinetuneConfig` has them all)."""

    sched: str
    epochs: int
    warmup_epochs: int
    step_size: int | None
    milestones: list[int]
    gamma: float


class LrSchedule:
    """`--sched` with `--warmup-epochs`: what to step, and when.

    Epoch schedulers are chained after a linear warm-up with `SequentialLR` and stepped once an
    epoch after the optimizer; `onecycle` is stepped after every optimizer step (its own warm-up
    is `--warmup-epochs`); `plateau` needs the validation loss, so its warm-up is stepped apart.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, settings: ScheduleSettings,
                 steps_per_epoch: int) -> None:
        from torch.optim import lr_scheduler as S

        info = SCHEDULERS[settings.sched]
        warmup = settings.warmup_epochs
        plan = SchedPlan(epochs=settings.epochs, main_epochs=max(1, settings.epochs - warmup),
                         warmup_epochs=warmup, steps_per_epoch=steps_per_epoch,
                         step_size=settings.step_size, milestones=list(settings.milestones),
                         gamma=settings.gamma)
        self.per_step, self.on_metric = info.per_step, info.on_metric
        self.warmup_epochs = warmup
        self.warmup: Any = None
        self.main: Any = info.build(optimizer, plan)
        self.scheduler: Any = self.main
        if info.per_step or not warmup:
            if info.on_metric:
                self.scheduler = None
            return
        warm = S.LinearLR(optimizer, WARMUP_START_FACTOR, 1.0, total_iters=warmup)
        if info.on_metric:
            self.warmup, self.scheduler = warm, None
        else:
            self.scheduler = S.SequentialLR(optimizer, [warm, self.main], milestones=[warmup])

    def step_batch(self) -> None:
        """After each optimizer step."""
        # A resumed run given more epochs than planned holds the one-cycle schedule's end.
        if self.per_step and self.main.last_epoch + 1 < self.main.total_steps:
            self.main.step()

    def step_epoch(self, epoch: int, val_loss: float) -> None:
        """After epoch `epoch` (1-based) has trained and been validated."""
        if self.per_step:
            return
        if self.on_metric:
            if self.warmup is not None and epoch <= self.warmup_epochs:
                self.warmup.step()
            else:
                self.main.step(val_loss)
            return
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """Plain state for checkpoints."""
        state = {"main": self.main.state_dict()}
        if self.scheduler is not None and self.scheduler is not self.main:
            state["chain"] = self.scheduler.state_dict()
        if self.warmup is not None:
            state["warmup"] = self.warmup.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        if "chain" in state:
            self.scheduler.load_state_dict(state["chain"])
        else:
            self.main.load_state_dict(state["main"])
        if "warmup" in state and self.warmup is not None:
            self.warmup.load_state_dict(state["warmup"])


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Learning rate of each named parameter group (decay/no-decay share one, so dedupe)."""
    lrs: dict[str, float] = {}
    for group in optimizer.param_groups:
        lrs.setdefault(group.get("name", "group").removesuffix("_no_decay"), float(group["lr"]))
    return lrs
