"""Imbalanced classes: `--class-weights` and `--sampler`, both from the training split's counts.

numpy only: `FinetuneConfig.validate` reads the choices below before torch is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLASS_WEIGHTS = {"none": "every class weighs 1 in the loss",
                 "auto": "inverse class frequency of the training split, mean weight 1"}
SAMPLERS = {"shuffle": "each training image once an epoch, in a seeded random order",
            "balanced": "draws with replacement, every class equally likely"}
# The start table lists the class counts when the largest class outnumbers the smallest by more.
IMBALANCE_SHOWN = 3.0


def class_counts(targets: Sequence[int] | np.ndarray, num_classes: int) -> list[int]:
    """Images per class of a split."""
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).tolist()


def imbalance(counts: Sequence[int]) -> float:
    """Largest over smallest class (inf when a class has no training image; 1.0 balanced)."""
    if not counts:
        return 1.0
    return max(counts) / min(counts) if min(counts) else float("inf")


def inverse_frequency(counts: Sequence[int]) -> list[float]:
    """Per-class weights proportional to 1 / count, scaled so that their mean is 1.

    With the mean at 1 the loss keeps its scale (and so the learning rate its meaning) on
    balanced data, where every weight is 1. A class without training images gets 0
    and the mean is taken over the others.
    """
    inverse = [1.0 / n if n else 0.0 for n in counts]
    present = sum(1 for n in counts if n)
    scale = present / sum(inverse) if present else 0.0
    return [w * scale for w in inverse]


def sample_weights(targets: Sequence[int] | np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Per-sample draw weights that make every class equally likely (`--sampler balanced`):
    each sample weighs its class's inverse frequency."""
    per_class = np.asarray(inverse_frequency(counts), dtype=np.float64)
    return per_class[np.asarray(targets, dtype=np.int64)]


def shown_counts(counts: Sequence[int], classes: Sequence[str]) -> dict[str, int]:
    """The per-class counts the start table shows: all of them when the split is imbalanced
    more than IMBALANCE_SHOWN : 1, else none."""
    if imbalance(counts) <= IMBALANCE_SHOWN:
        return {}
    return dict(zip(classes, (int(n) for n in counts), strict=True))
