"""What a fine-tuning run reports: the start table, one row per epoch, and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunStart:
    """What is about to happen: shown as the table before training."""

    run_dir: Path
    data: str
    train_images: int
    val_images: int
    classes: list[str]
    model: str
    weights: str
    input_size: tuple[int, int, int]
    total_params: int
    trainable_params: int
    frozen_params: int
    device: str
    amp: str
    world_size: int
    epochs: int
    start_epoch: int
    cached: bool
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class EpochRow:
    """One epoch's figures (a row of metrics.csv)."""

    epoch: int
    train_loss: float
    train_acc1: float
    val_loss: float
    val_acc1: float
    val_acc5: float
    lr: float
    images_per_s: float
    epoch_time_s: float
    frozen: bool = False
    per_class: list[float] = field(default_factory=list)


@dataclass
class FinetuneResult:
    """The finished run: where it is and how good its best weights are."""

    run_dir: Path
    model_file: Path
    epochs: list[EpochRow]
    best_epoch: int
    best_val_acc1: float
    final_val_acc1: float
    per_class_acc: dict[str, float]
    class_names: list[str]
    tensorboard_command: str
    resumed_from: Path | None = None

    @classmethod
    def of(cls, run_dir: Path, history: list[EpochRow], best_epoch: int, best_acc1: float,
           classes: list[str], resumed_from: Path | None = None) -> FinetuneResult:
        """The result of a run that trained `history`, its best weights from `best_epoch`."""
        from toolbox import runs
        from toolbox.tensorboard import tensorboard_command

        best = next((r for r in history if r.epoch == best_epoch), history[-1])
        return cls(run_dir=run_dir, model_file=run_dir / runs.MODEL_FILE, epochs=list(history),
                   best_epoch=best_epoch, best_val_acc1=best_acc1,
                   final_val_acc1=history[-1].val_acc1,
                   per_class_acc=dict(zip(classes, best.per_class, strict=False)),
                   class_names=list(classes), tensorboard_command=tensorboard_command(run_dir),
                   resumed_from=resumed_from)
