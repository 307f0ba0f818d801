"""`finetune()`: one fine-tuning run from data and model to a resumable run folder (DDP-aware)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from toolbox import runs
from toolbox.errors import ToolboxError
from toolbox.progress import NullProgress, Progress
from toolbox.train.config import FinetuneConfig
from toolbox.train.results import EpochRow, FinetuneResult, RunStart


def _default_out(model: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{model.replace(':', '-').replace('/', '-')}"
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def _check_out(run_dir: Path) -> None:
    if runs.checkpoint_path(run_dir).is_file() or (run_dir / runs.MODEL_FILE).is_file():
        raise ToolboxError(f"{run_dir} already holds a run",
                           f"continue it with --resume {run_dir}, or choose another --out")


@dataclass(frozen=True)
class ResumeOverrides:
    """Settings given with `--resume`; None keeps the checkpoint's value. `others` holds any
    other setting by its `FinetuneConfig` name: `plan_resume` applies it or refuses it."""

    epochs: int | None = None
    workers: int | None = None
    device: str | None = None
    others: dict[str, Any] = field(default_factory=dict)

    def given(self) -> dict[str, Any]:
        """Every setting given, by name."""
        named = {"epochs": self.epochs, "workers": self.workers, "device": self.device}
        return {**self.others, **{k: v for k, v in named.items() if v is not None}}


def finetune(config: FinetuneConfig, *, resume: str | Path | None = None,
             resume_overrides: ResumeOverrides | None = None, progress: Progress | None = None,
             on_start: Callable[[RunStart], None] | None = None,
             on_epoch: Callable[[EpochRow], None] | None = None,
             checkpoints: bool = True) -> FinetuneResult:
    """Fine-tune a model and write a run folder (see `toolbox.runs` for its layout).

    Args:
        config: the run's settings; ignored apart from `resume_overrides` when resuming.
        resume: a run folder or checkpoint to continue from.
        resume_overrides: settings given with `--resume`: applied and listed in the start
            notes when they may change (see `toolbox.train.resume`), else refused.
        progress: receives the per-epoch progress and notes.
        on_start: called once with what is about to run (rank 0 only).
        on_epoch: called after every epoch with its figures (rank 0 only). Raising
            KeyboardInterrupt there behaves like Ctrl-C; raising `StopRun` ends the run after
            that epoch, as `--patience` does.
        checkpoints: False writes no `checkpoints/*.pt` after the epochs (the best weights
            still go to `model.safetensors`): for runs nobody resumes, such as a study's
            trials, which otherwise spend much of their time writing optimizer states.

    Raises:
        ToolboxError: bad data, model, weights or checkpoint; a non-finite loss.
        KeyboardInterrupt: after saving `checkpoints/last.pt`.
    """
    # Torch and the trainer load here, not with the package: `tb finetune --help` and the
    # CLI's option defaults (read from FinetuneConfig) need neither.
    from toolbox.devices import keep_freed_memory
    from toolbox.train.distributed import setup_distributed
    from toolbox.train.resume import plan_resume

    progress = progress or NullProgress()
    config = dataclasses.replace(config)  # resolved values are filled in on a copy
    state: dict[str, Any] | None = None
    resumed_from = plan = None
    if resume is not None:
        plan = plan_resume(resume, (resume_overrides or ResumeOverrides()).given())
        config, state, resumed_from, run_dir = (plan.config, plan.state, plan.checkpoint,
                                                plan.run_dir)
    config.validate()
    lr_note = config.resolve_lr()
    ctx, device = setup_distributed(config.device)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults re-zeroing each step's activations
    try:
        if state is None:
            run_dir = Path(config.out) if config.out else _default_out(config.model)
            run_dir = Path(ctx.broadcast(str(run_dir)))
            if ctx.is_main:
                _check_out(run_dir)
        config.out = str(run_dir)
        trainer = _trainer_class(config.task)
        return trainer(config, ctx, device, run_dir, state, resumed_from, progress,
                       on_start, on_epoch, lr_note, plan, checkpoints).run()
    finally:
        ctx.close()


def _trainer_class(task: str) -> type:
    """The task's trainer, imported alone: a classification run does not load segmentation's
    losses, metrics and data code, nor the reverse beyond the base class."""
    if task == "segment":
        from toolbox.train.segment import SegmentTrainer

        return SegmentTrainer
    from toolbox.train.trainer import Trainer

    return Trainer
