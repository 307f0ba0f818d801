"""Loss and accuracy bookkeeping (summed on the device, reduced across ranks) and metrics.csv."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from toolbox.fileio import atomic_write_text

TOPK = 5  # the "top-5" accuracy, over all classes when there are fewer


def topk_for(num_classes: int) -> int:
    """The k of the top-k accuracy for `num_classes` classes: never more than there are."""
    return min(TOPK, num_classes)


CSV_COLUMNS = ("epoch", "train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5",
               "lr", "images_per_s", "epoch_time_s")


class Meter:
    """Sums of loss, top-1/top-k hits and per-class counts, kept on the device (no sync per step).

    `reduce(ctx)` sums them over every rank and returns plain numbers.
    """

    def __init__(self, num_classes: int, device: torch.device, topk: int = TOPK) -> None:
        self.num_classes = num_classes
        self.topk = min(topk, num_classes)
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, n, top1, topk
        self.class_total = torch.zeros(num_classes, dtype=torch.float64, device=device)
        self.class_hit = torch.zeros(num_classes, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        n = targets.shape[0]
        top = logits.topk(self.topk, dim=1).indices
        hit = top == targets.unsqueeze(1)
        hit1 = hit[:, 0].double()
        self.sums += torch.stack([loss.detach().double() * n,
                                  torch.tensor(float(n), dtype=torch.float64, device=loss.device),
                                  hit1.sum(), hit.any(dim=1).double().sum()])
        self.class_total.index_add_(0, targets, torch.ones_like(hit1))
        self.class_hit.index_add_(0, targets, hit1)

    def reduce(self, ctx) -> MeterResult:
        values = ctx.all_reduce_sum(torch.cat([self.sums, self.class_total, self.class_hit]).cpu())
        loss_sum, n, top1, topk = values[:4].tolist()
        total = values[4:4 + self.num_classes]
        hits = values[4 + self.num_classes:]
        per_class = [float(h / t) if t > 0 else float("nan") for h, t in
                     zip(hits.tolist(), total.tolist(), strict=True)]
        n = max(n, 1.0)
        return MeterResult(loss_sum / n, top1 / n, topk / n, int(n), per_class)


@dataclass
class MeterResult:
    """Reduced figures of one pass over the data."""

    loss: float
    acc1: float
    acck: float
    count: int
    per_class: list[float] = field(default_factory=list)


def write_metrics_csv(path: Path, rows: list[dict], columns: Sequence[str] = CSV_COLUMNS
                      ) -> None:
    """Rewrite metrics.csv atomically from the run's history (one row an epoch)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())
