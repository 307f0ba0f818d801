"""What a fine-tuning run reports: the start table, one row per epoch, and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


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
    lr: float
    skipped: int = 0  # files left out: unreadable images and files that are not images
    lr_note: str | None = None  # why this lr, when it is a default chosen by the mode
    topk: int = 5  # the k of the "top-5" accuracy: never more than there are classes
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Training images per class, only when the largest class outnumbers the smallest more than
    # 3:1 (`train.balance.shown_counts`).
    class_counts: dict[str, int] = field(default_factory=dict)
    resize: str = "crop"  # how images meet input_size (toolbox.preprocess)
    recipe: list[str] = field(default_factory=list)  # one line per recipe option in use (EMA)
    # "cached (N computed in S s, M reused)" or "computed each epoch (why)"; None: segmentation
    features: str | None = None

    def settings(self) -> dict[str, Any]:
        """The resolved settings a run is recorded with (args.yaml's `resolved:` section)."""
        return {"data": self.data, "train_images": self.train_images,
                "val_images": self.val_images, "skipped": self.skipped,
                "classes": list(self.classes), "model": self.model, "weights": self.weights,
                "input_size": list(self.input_size), "resize": self.resize,
                "total_params": self.total_params,
                "trainable_params": self.trainable_params, "frozen_params": self.frozen_params,
                "device": self.device, "world_size": self.world_size,
                "mixed_precision": self.amp, "epochs": self.epochs,
                "start_epoch": self.start_epoch, "cached": self.cached, "topk": self.topk,
                "lr": self.lr, "lr_note": self.lr_note, "recipe": list(self.recipe),
                "class_counts": dict(self.class_counts), "features": self.features}


@dataclass
class EpochRow:
    """One epoch's figures (a row of metrics.csv)."""

    SCORE: ClassVar[str] = "val_acc1"  # the figure that picks the best epoch (higher is better)
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
    per_class: list[float] = field(default_factory=list)  # of the better of raw and EMA
    ema_val_loss: float | None = None  # with --ema: the averaged weights' validation
    ema_val_acc1: float | None = None
    saved: str = ""  # "raw" or "ema" when this epoch's weights became model.safetensors


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
    lr: float  # the peak learning rate used (chosen by mode unless --lr was given)
    resumed_from: Path | None = None
    stop_reason: str = ""  # why training ended (also in result.yaml)
    best_weights: str = "raw"  # which weights model.safetensors holds: "raw" or "ema" (--ema)
    start: RunStart | None = None  # the settings it ran with, for the final report

    @classmethod
    def of(cls, run_dir: Path, history: list[EpochRow], best_epoch: int, best_acc1: float,
           classes: list[str], lr: float, resumed_from: Path | None = None,
           start: RunStart | None = None) -> FinetuneResult:
        """The result of a run that trained `history`, its best weights from `best_epoch`."""
        from toolbox import runs
        from toolbox.tensorboard import tensorboard_command

        best = next((r for r in history if r.epoch == best_epoch), history[-1])
        return cls(run_dir=run_dir, model_file=run_dir / runs.MODEL_FILE, epochs=list(history),
                   best_epoch=best_epoch, best_val_acc1=best_acc1,
                   final_val_acc1=history[-1].val_acc1,
                   per_class_acc=dict(zip(classes, best.per_class, strict=False)),
                   class_names=list(classes), tensorboard_command=tensorboard_command(run_dir),
                   lr=lr, resumed_from=resumed_from, start=start)
