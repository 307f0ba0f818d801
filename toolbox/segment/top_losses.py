"""The images a segmentation model gets most wrong: per-image pixel cross-entropy, the K worst
kept while evaluating, drawn as the true mask and the predicted one over each image."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolbox.images import write_image
from toolbox.inference.top_losses import panel_grid
from toolbox.segment.losses import IGNORE_INDEX
from toolbox.segment.overlay import overlay

if TYPE_CHECKING:
    import torch

TOP_LOSSES_PNG = "top_losses.png"
DIVIDER = 2  # white pixels between the true and the predicted overlay of one image


@dataclass(frozen=True)
class MaskTopLoss:
    """One of the highest-loss images of a segmentation evaluation."""

    rank: int  # 1 = the highest loss
    file: str
    loss: float  # mean pixel cross-entropy over the pixels not marked 255
    pixel_acc: float


class WorstImages:
    """Keeps the `k` images with the highest loss seen so far (with what drawing them needs)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._heap: list[tuple[float, int, str, float, np.ndarray, np.ndarray, np.ndarray]] = []
        self._seen = 0

    def add(self, files: list[str], images: torch.Tensor, masks: torch.Tensor,
            logits: torch.Tensor) -> None:
        """One batch: uint8 (N, C, H, W) images at the input size, (N, H, W) masks and the
        (N, K, H, W) logits."""
        import torch.nn.functional as F

        if self.k <= 0:
            return
        masks = masks.long()
        pixel = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, reduction="none")
        valid = (masks != IGNORE_INDEX).flatten(1).sum(dim=1).clamp_min(1)
        losses = pixel.flatten(1).sum(dim=1) / valid
        preds = logits.argmax(dim=1)
        right = ((preds == masks) & (masks != IGNORE_INDEX)).flatten(1).sum(dim=1) / valid
        for n, file in enumerate(files):
            # Ties keep the earlier image: a later one must beat it to get in.
            key = (float(losses[n]), -self._seen)
            self._seen += 1
            if len(self._heap) == self.k and key <= self._heap[0][:2]:
                continue
            image = images[n]
            if image.shape[0] == 1:
                image = image.expand(3, -1, -1)
            entry = (*key, file, float(right[n]), image.permute(1, 2, 0).numpy().copy(),
                     masks[n].numpy().astype(np.uint8), preds[n].numpy().astype(np.uint8))
            if len(self._heap) < self.k:
                heapq.heappush(self._heap, entry)
            else:
                heapq.heapreplace(self._heap, entry)

    def write(self, out_dir: Path) -> tuple[list[MaskTopLoss], Path | None]:
        """`out_dir/top_losses.png`: per image the true mask (left) and the predicted one
        (right) over it, highest loss first; and the entries it shows."""
        worst = sorted(self._heap, key=lambda e: (-e[0], -e[1]))
        if not worst:
            return [], None
        items, panels, captions = [], [], []
        for rank, (loss, _, file, acc, image, mask, pred) in enumerate(worst, start=1):
            items.append(MaskTopLoss(rank, file, loss, acc))
            gap = np.full((image.shape[0], DIVIDER, 3), 255, dtype=np.uint8)
            panels.append(np.concatenate([overlay(image, mask), gap, overlay(image, pred)],
                                         axis=1))
            captions.append([Path(file).name, "left true, right predicted",
                             f"loss {loss:.3f}  pixel acc {acc:.0%}"])
        grid = panel_grid(panels, captions)
        return items, write_image(out_dir / TOP_LOSSES_PNG, grid.image)
