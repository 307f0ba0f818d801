"""Segmentation scores from a pixel confusion matrix: per-class IoU and Dice, mIoU, accuracy.

The matrix (rows: true class, columns: predicted) is summed on the device batch by batch and
across DDP ranks, so the figures are exact over the whole validation set, not batch averages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from toolbox.segment.losses import IGNORE_INDEX

if TYPE_CHECKING:
    import torch


def confusion(preds: torch.Tensor, masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 pixel counts of (true, predicted) over the pixels not marked 255."""
    import torch

    masks = masks.reshape(-1).long()
    preds = preds.reshape(-1).long()
    keep = masks != IGNORE_INDEX
    flat = masks[keep] * num_classes + preds[keep]
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@dataclass
class SegmentScores:
    """Scores of a confusion matrix. A class that is neither present nor predicted has no IoU
    or Dice (NaN) and is left out of the means, as mmsegmentation does."""

    iou: list[float]
    dice: list[float]
    pixel_acc: float
    miou: float
    mean_dice: float  # over the foreground classes (1..C-1): the binary case's Dice
    matrix: list[list[int]] = field(default_factory=list)
    loss: float = float("nan")  # mean loss per image, when a training pass measured one


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def foreground_mean(per_class: Sequence[float]) -> float:
    """The mean of per-class figures over the foreground classes (1..C-1), NaN classes left
    out: the mean Dice, which in the binary case is the foreground's own."""
    return _nanmean(np.asarray(per_class, dtype=np.float64)[1:])


def scores(matrix: np.ndarray | torch.Tensor) -> SegmentScores:
    """IoU = TP / (TP + FP + FN), Dice = 2 TP / (2 TP + FP + FN), per class, and their means."""
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    true, predicted = m.sum(axis=1), m.sum(axis=0)
    union = true + predicted - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(true + predicted > 0, 2 * tp / (true + predicted), np.nan)
    total = m.sum()
    return SegmentScores(
        iou=iou.tolist(), dice=dice.tolist(),
        pixel_acc=float(tp.sum() / total) if total else float("nan"),
        miou=_nanmean(iou), mean_dice=foreground_mean(dice),
        matrix=m.astype(np.int64).tolist())


class SegmentMeter:
    """The training loop's meter for segmentation: loss sum and the confusion matrix, on the
    device (no sync per step); `reduce(ctx)` sums them over every rank."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        import torch

        self.num_classes = num_classes
        self.loss = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, images
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def update(self, loss: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor) -> None:
        import torch

        with torch.no_grad():
            n = masks.shape[0]
            self.loss += torch.stack([loss.detach().double() * n,
                                      torch.tensor(float(n), dtype=torch.float64,
                                                   device=self.loss.device)])
            self.matrix += confusion(logits.argmax(dim=1), masks, self.num_classes)

    def reduce(self, ctx) -> SegmentScores:
        """The scores and mean loss per image over every rank."""
        import torch

        values = ctx.all_reduce_sum(torch.cat([self.loss.cpu(),
                                               self.matrix.double().cpu().reshape(-1)]))
        loss_sum, n = values[:2].tolist()
        matrix = values[2:].reshape(self.num_classes, self.num_classes).round().long()
        result = scores(matrix.numpy())
        result.loss = loss_sum / max(n, 1.0)
        return result
