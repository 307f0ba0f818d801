"""Optimizer and learning-rate scheduler registries, and the schedule wrapper the loop steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from toolbox.train.config import FinetuneConfig

WARMUP_START_FACTOR = 0.01


@dataclass(frozen=True)
class OptimInfo:
    """One `--opt` choice."""

    name: str
    description: str
    build: Callable[[list[dict[str, Any]], FinetuneConfig], torch.optim.Optimizer]


OPTIMIZERS: dict[str, OptimInfo] = {info.name: info for info in (
    OptimInfo("adamw", "Adam with decoupled weight decay (default)",
              lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg.lr)),
    OptimInfo("adam", "Adam (weight decay added to the gradient)",
              lambda groups, cfg: torch.optim.Adam(groups, lr=cfg.lr)),
    OptimInfo("sgd", "SGD with Nesterov momentum (--momentum)",
              lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                                  nesterov=cfg.momentum > 0)),
)}


@dataclass(frozen=True)
class SchedInfo:
    """One `--sched` choice; `per_step` schedulers are stepped after every optimizer step."""

    name: str
    description: str
    per_step: bool = False


SCHEDULERS: dict[str, SchedInfo] = {info.name: info for info in (
    SchedInfo("cosine", "cosine annealing to 0 over the epochs after warm-up (default)"),
    SchedInfo("step", "multiply by --gamma every --step-size epochs"),
    SchedInfo("multistep", "multiply by --gamma at --milestones (default: 1/2 and 3/4 of the run)"),
    SchedInfo("exponential", "multiply by --gamma every epoch"),
    SchedInfo("onecycle", "one-cycle policy, stepped every optimizer step", per_step=True),
    SchedInfo("plateau", "divide by 10 when the validation loss stops improving"),
    SchedInfo("none", "constant learning rate (after any warm-up)"),
)}


def param_groups(model: nn.Module, head_prefix: str, cfg: FinetuneConfig
                 ) -> list[dict[str, Any]]:
    """Head and backbone groups, each split into decayed weights and undecayed biases/norms.

    All parameters are in the optimizer from the start, frozen ones included: they get no
    gradient and so are skipped until `--unfreeze-at`, and resuming needs no special case.
    """
    backbone_scale = cfg.backbone_lr_scale if cfg.unfreeze_at is not None else 1.0
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        part = "head" if name == head_prefix or name.startswith(head_prefix + ".") else "backbone"
        decay = param.ndim > 1  # no weight decay on biases and normalisation scales (timm)
        buckets.setdefault((part, decay), []).append(param)
    groups = []
    for (part, decay), params in sorted(buckets.items()):
        groups.append({
            "params": params, "name": f"{part}{'' if decay else '_no_decay'}",
            "weight_decay": cfg.weight_decay if decay else 0.0,
            "lr": cfg.lr * (backbone_scale if part == "backbone" else 1.0),
        })
    return groups


def build_optimizer(model: nn.Module, head_prefix: str, cfg: FinetuneConfig
                    ) -> torch.optim.Optimizer:
    """The `--opt` optimizer over `param_groups`."""
    return OPTIMIZERS[cfg.opt].build(param_groups(model, head_prefix, cfg), cfg)


class LrSchedule:
    """`--sched` with `--warmup-epochs`: what to step, and when.

    Epoch schedulers are chained after a linear warm-up with `SequentialLR` and stepped once an
    epoch after the optimizer; `onecycle` is stepped after every optimizer step (its own warm-up
    is `--warmup-epochs`); `plateau` needs the validation loss, so its warm-up is stepped apart.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: FinetuneConfig,
                 steps_per_epoch: int) -> None:
        from torch.optim import lr_scheduler as S

        self.name = cfg.sched
        self.per_step = SCHEDULERS[cfg.sched].per_step
        warmup = cfg.warmup_epochs
        main_epochs = max(1, cfg.epochs - warmup)
        self.warmup_epochs = warmup
        self.warmup: Any = None
        self.main: Any
        if cfg.sched == "onecycle":
            max_lr = [group["lr"] for group in optimizer.param_groups]
            pct = warmup / cfg.epochs if warmup else 0.3
            self.main = S.OneCycleLR(optimizer, max_lr=max_lr,
                                     total_steps=max(2, cfg.epochs * steps_per_epoch),
                                     pct_start=min(max(pct, 0.01), 0.99))
            self.scheduler = self.main
            return
        if cfg.sched == "plateau":
            self.main = S.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=2)
            if warmup:
                self.warmup = S.LinearLR(optimizer, WARMUP_START_FACTOR, 1.0, total_iters=warmup)
            self.scheduler = None
            return
        if cfg.sched == "cosine":
            main = S.CosineAnnealingLR(optimizer, T_max=main_epochs)
        elif cfg.sched == "step":
            main = S.StepLR(optimizer, step_size=cfg.step_size or max(1, main_epochs // 3),
                            gamma=cfg.gamma)
        elif cfg.sched == "multistep":
            milestones = cfg.milestones or [cfg.epochs // 2, cfg.epochs * 3 // 4]
            main = S.MultiStepLR(optimizer, milestones=sorted(
                {max(1, m - warmup) for m in milestones}), gamma=cfg.gamma)
        elif cfg.sched == "exponential":
            main = S.ExponentialLR(optimizer, gamma=cfg.gamma)
        else:
            main = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
        self.main = main
        if warmup:
            warm = S.LinearLR(optimizer, WARMUP_START_FACTOR, 1.0, total_iters=warmup)
            self.scheduler = S.SequentialLR(optimizer, [warm, main], milestones=[warmup])
        else:
            self.scheduler = main

    def step_batch(self) -> None:
        """After each optimizer step."""
        # A resumed run given more epochs than planned holds the one-cycle schedule's end.
        if self.per_step and self.main.last_epoch + 1 < self.main.total_steps:
            self.main.step()

    def step_epoch(self, epoch: int, val_loss: float) -> None:
        """After epoch `epoch` (1-based) has trained and been validated."""
        if self.per_step:
            return
        if self.name == "plateau":
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
