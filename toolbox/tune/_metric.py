"""`--metric`: the validation figure a study optimises, its direction, and how it is read from a
run's epochs (the same figures `tb finetune` prints and writes to metrics.csv)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from toolbox.errors import UsageError, unknown_name


@dataclass(frozen=True)
class Metric:
    """One optimisable figure of an epoch row."""

    name: str
    direction: str  # "maximize" or "minimize", as Optuna spells it
    tasks: tuple[str, ...]  # the --task values whose epochs have it
    description: str

    def of(self, row: Any) -> float:
        """The figure of one epoch row. Accuracy and mIoU are those of the better of the raw
        and EMA weights (with --ema), as the epoch that `tb finetune` keeps is picked."""
        if self.name in ("val_acc", "val_miou"):
            from toolbox.train.ema import best_of

            return float(best_of(row)[0])
        return float(getattr(row, self.name))

    def best(self, values: Sequence[float]) -> float:
        """The best of a run's per-epoch figures: the trial's value."""
        return max(values) if self.direction == "maximize" else min(values)


METRICS = {m.name: m for m in (
    Metric("val_acc", "maximize", ("classify",), "validation accuracy (top-1)"),
    Metric("val_loss", "minimize", ("classify", "segment"), "validation loss"),
    Metric("val_miou", "maximize", ("segment",), "validation mean IoU"),
    Metric("val_dice", "maximize", ("segment",), "validation Dice (foreground mean)"),
)}
DEFAULT_METRIC = {"classify": "val_acc", "segment": "val_miou"}


def metric_for(name: str | None, task: str) -> Metric:
    """The metric named `name` (None: the task's default) for a study of `task`.

    Raises:
        UsageError: an unknown metric, or one the task's epochs do not have.
    """
    name = name or DEFAULT_METRIC.get(task, "val_loss")
    if name not in METRICS:
        raise unknown_name("metric", name, METRICS, f"choose one of {', '.join(METRICS)}",
                           param="--metric")
    metric = METRICS[name]
    if task not in metric.tasks:
        usable = [m for m, info in METRICS.items() if task in info.tasks]
        raise UsageError(f"--metric {name} is not measured by --task {task}",
                         f"choose one of {', '.join(usable)}", param="--metric")
    return metric
