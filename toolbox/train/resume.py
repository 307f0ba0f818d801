"""What `--resume` may change: flags that differ from the run's own settings, and the re-planned
learning-rate schedule when the run is extended or its schedule changed.

The rule for a changed schedule (`--epochs N` included): the schedule is planned as if the new
settings had been given from the start, and fast-forwarded through the epochs already trained.
A 2-epoch cosine run extended to 4 epochs trains epoch 3 at the lr a 4-epoch cosine run has at
epoch 3 (half the peak) and epoch 4 lower still; the curve never wraps around.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolbox import runs
from toolbox.errors import UsageError
from toolbox.train.config import FinetuneConfig

# Settings of how the remaining epochs train; changing them on resume is applied.
RESUMABLE = frozenset({
    "epochs", "lr", "weight_decay", "sched", "warmup_epochs", "step_size", "milestones", "gamma",
    "batch_size", "grad_accum", "clip_grad", "momentum", "workers", "device", "cache", "amp",
    "amp_dtype", "channels_last", "compile", "label_smoothing", "patience", "min_delta", "ema",
    "ema_decay", "mixup", "cutmix", "class_weights", "sampler", "feature_cache",
    "feature_cache_dir", "shuffle_buffer",
})
# The subset that changes the learning-rate plan (the schedule is re-planned).
SCHEDULE_KEYS = frozenset({
    "epochs", "lr", "weight_decay", "sched", "warmup_epochs", "step_size", "milestones", "gamma",
    "batch_size", "grad_accum",
})


@dataclass
class ResumePlan:
    """The settings a resumed run trains with, what changed from its own, and its state."""

    config: FinetuneConfig
    changes: list[str]  # "changed on resume: lr 0.001 -> 0.0005", one per changed flag
    replan: bool  # the learning-rate schedule must be re-planned
    checkpoint: Path
    state: dict[str, Any]
    run_dir: Path


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def plan_resume(resume: str | Path, overrides: dict[str, Any]) -> ResumePlan:
    """Load the run `resume` names and apply the flags given with `--resume` to its settings.

    Args:
        resume: a run folder or checkpoint.
        overrides: the settings given explicitly on the command line (None values: not given).

    Raises:
        UsageError: no such run, a flag that cannot change on resume (data, model, ...), or
            fewer epochs than the run has trained.
    """
    from toolbox.train.checkpoint import load_checkpoint, resume_file  # torch, on demand

    checkpoint = resume_file(resume)
    state = load_checkpoint(checkpoint)
    run_dir = (checkpoint.parent.parent if checkpoint.parent.name == runs.CHECKPOINT_DIR
               else Path(state["args"].get("out") or checkpoint.parent))
    config = FinetuneConfig.from_dict(state["args"])
    changes, replan = [], False
    for key, value in overrides.items():
        old = getattr(config, key, None)
        if value is None or key == "out" or value == old:
            continue  # --out names the run folder, which --resume already fixed
        if key not in RESUMABLE:
            raise UsageError(
                f"{_flag(key)} cannot change on resume (the run has {old!r}, asked {value!r})",
                f"drop {_flag(key)}, or start a new run from its settings: "
                f"tb finetune --config {run_dir / runs.ARGS_FILE} {_flag(key)} ...",
                param=_flag(key))
        setattr(config, key, value)
        changes.append(f"changed on resume: {key.replace('_', '-')} {old} -> {value}")
        replan = replan or key in SCHEDULE_KEYS
    done = int(state["epoch"])
    if config.epochs < done:
        raise UsageError(f"the run has already trained {done} epochs, more than "
                         f"--epochs {config.epochs}", f"pass --epochs above {done} to extend it",
                         param="--epochs")
    return ResumePlan(config, changes, replan, checkpoint, state, run_dir)


def backbone_scale(config: FinetuneConfig) -> float:
    """The backbone's lr factor: `--backbone-lr-scale` applies only with `--unfreeze-at`."""
    return config.backbone_lr_scale if config.unfreeze_at is not None else 1.0


def replan_for(state: Any, head: str, steps_per_epoch: int) -> Any:
    """`state`'s schedule (a `TrainState`, just restored) re-planned with its settings."""
    from toolbox.train.optim import LrSchedule, param_groups  # torch, on demand

    cfg = state.cfg
    fresh = param_groups(state.model, head, lr=cfg.lr, weight_decay=cfg.weight_decay,
                         backbone_lr_scale=backbone_scale(cfg), layer_decay=cfg.layer_decay)
    return replan_schedule(
        state.optimizer, fresh, lambda: LrSchedule(state.optimizer, cfg, steps_per_epoch),
        done_epochs=state.epoch, steps_per_epoch=steps_per_epoch,
        val_losses=[row.val_loss for row in state.history])


def replan_schedule(optimizer: Any, fresh_groups: Sequence[dict[str, Any]],
                    make_schedule: Callable[[], Any], *, done_epochs: int, steps_per_epoch: int,
                    val_losses: Sequence[float]) -> Any:
    """A new schedule for the optimizer, as if planned from the start, fast-forwarded through
    `done_epochs` (each with `steps_per_epoch` optimizer steps and its validation loss).

    The restored optimizer keeps its moments; only each group's base lr and weight decay are
    set from `fresh_groups` (the groups a new run would build) before the schedule is made.
    """
    for group, fresh in zip(optimizer.param_groups, fresh_groups, strict=True):
        group["lr"] = fresh["lr"]
        group["weight_decay"] = fresh["weight_decay"]
        group.pop("initial_lr", None)
    schedule = make_schedule()
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose
        warnings.simplefilter("ignore")
        for epoch in range(1, done_epochs + 1):
            for _ in range(steps_per_epoch):
                schedule.step_batch()
            schedule.step_epoch(epoch, val_losses[epoch - 1])
    return schedule
