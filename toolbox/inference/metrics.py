"""Classification metrics from a confusion matrix: accuracy, per-class precision, recall and F1.

Everything is accumulated batch by batch with `torch.bincount` and computed with numpy, so a
large evaluation set costs one pass and no per-sample Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ClassScore:
    """Scores of one class; `recall` is None (undefined) when the data has none of it."""

    name: str
    precision: float
    recall: float | None
    f1: float | None
    support: int


class ConfusionCounter:
    """Accumulates the confusion matrix (rows: true class, columns: predicted) and top-k hits."""

    def __init__(self, num_classes: int, k: int = 5) -> None:
        self.num_classes = num_classes
        self.k = min(k, num_classes)
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.topk_hits = 0

    def update(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: (N, C) scores and (N,) integer targets."""
        import torch

        if probs.shape[0] == 0:
            return
        targets = targets.to(torch.int64)
        preds = probs.argmax(dim=1)
        flat = targets * self.num_classes + preds
        counts = torch.bincount(flat, minlength=self.num_classes ** 2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes).numpy()
        topk = probs.topk(self.k, dim=1).indices
        self.topk_hits += int((topk == targets[:, None]).any(dim=1).sum())

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    @property
    def top1(self) -> float:
        return float(np.trace(self.matrix) / self.total) if self.total else float("nan")

    @property
    def topk(self) -> float:
        return self.topk_hits / self.total if self.total else float("nan")


def class_scores(matrix: np.ndarray, names: list[str]) -> list[ClassScore]:
    """Per-class precision, recall and F1 (a class never predicted has precision 0, as
    scikit-learn's `zero_division=0`; a class absent from the data has no recall or F1)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1)
    scores = []
    for i, name in enumerate(names):
        precision = tp[i] / predicted[i] if predicted[i] else 0.0
        if support[i]:
            recall = tp[i] / support[i]
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        else:
            recall = f1 = None
        scores.append(ClassScore(name, float(precision), None if recall is None else
                                 float(recall), None if f1 is None else float(f1),
                                 int(support[i])))
    return scores


def averages(scores: list[ClassScore]) -> dict[str, float]:
    """Macro (unweighted, over the classes present in the data) and support-weighted means."""
    present = [s for s in scores if s.support]
    if not present:
        return {}
    weights = np.array([s.support for s in present], dtype=float)
    out = {}
    for field in ("precision", "recall", "f1"):
        values = np.array([getattr(s, field) for s in present], dtype=float)
        out[f"macro_{field}"] = float(values.mean())
        out[f"weighted_{field}"] = float((values * weights).sum() / weights.sum())
    return out
