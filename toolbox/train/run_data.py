"""A run's data as the epoch loop sees it: the training and validation sets, their loaders,
and the numbers the start table reports about them (class balance, skipped files, features).

Every kind of data (image folders and tables in `train.data`, tar shards in
`train.shard_data`, cached features in `train.feature_data`, segmentation pairs) ends in one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from toolbox.sources import SkippedFile
from toolbox.train import balance


@dataclass
class RunData:
    """A run's prepared images and the loaders over them.

    The fields hold whatever the data's kind uses (`train.data`'s `PreparedImages`,
    `BatchLoader` and `ShardLoader`, or their shard and feature counterparts); the loop needs
    only `len()` of a set, `batches(epoch)` and `num_batches()` of the loader, and iteration and
    `start()` of the validation loader.
    """

    train: Any
    val: Any
    loader: Any
    val_loader: Any
    cached: bool
    probed: list[SkippedFile] = field(default_factory=list)  # unreadable, left out before split
    class_counts: list[int] = field(default_factory=list)  # training images per class, all ranks
    unit: str = "unreadable image(s)"  # what a skipped sample is, in the start table's warning
    # The start table's features line: cached (frozen runs, `train.feature_data`) or why not.
    features: str | None = None

    def start_epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training batches of `epoch`, with the validation pass's loader workers started
        beside the training loader's.

        Forked after the training pass instead, the workers would share the heap that the
        epoch's activations grew, and each page the validation forward then wrote would be
        copied while they lived: resnet18's first validation batch at 64 px took 0.38 s instead
        of 0.11 s. Started now, they decode their first batches while the model trains.
        """
        batches = self.loader.batches(epoch)
        self.val_loader.start()
        return batches

    def class_weights(self, rule: str) -> list[float] | None:
        """The loss's per-class weights for `--class-weights rule` (None: unweighted)."""
        return balance.inverse_frequency(self.class_counts) if rule == "auto" else None

    def balance_lines(self, class_weights: str, sampler: str) -> list[str]:
        """The start table's recipe lines for the class balancing in use."""
        lines = []
        if class_weights == "auto":
            weights = ", ".join(f"{w:.2f}" for w in self.class_weights(class_weights))
            lines.append(f"class weights (inverse frequency, mean 1): {weights}")
        if sampler == "balanced":
            lines.append("balanced sampler: each class drawn about equally often")
        return lines

    def imbalance_hint(self, class_weights: str, sampler: str) -> list[str]:
        """A note when the classes are imbalanced past 3:1 and nothing balances them."""
        ratio = balance.imbalance(self.class_counts)
        if self.balance_lines(class_weights, sampler) or ratio <= balance.IMBALANCE_SHOWN:
            return []
        shown = "a class has no training image" if math.isinf(ratio) else f"{ratio:.1f}:1"
        return [f"the classes are imbalanced ({shown}, largest to smallest); "
                f"consider --class-weights auto or --sampler balanced"]

    def counts(self, ctx: Any) -> tuple[int, int, int, list[str]]:
        """Training and validation images over every rank, the unreadable ones left out, and
        what the start table warns about them: left out before the split (every rank found
        the same ones) and while decoding (each rank read only its share)."""
        skipped = self.probed + self.train.skipped + self.val.skipped
        counts = ctx.all_reduce_sum([len(self.train), len(self.val), len(skipped) -
                                     len(self.probed)])
        total = int(counts[2]) + len(self.probed)
        if not total:
            return int(counts[0]), int(counts[1]), 0, []
        example = f", e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""
        return (int(counts[0]), int(counts[1]), total,
                [f"skipped {total} {self.unit}{example}"])
