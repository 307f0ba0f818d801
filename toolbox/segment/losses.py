"""Segmentation losses over (N, C, H, W) logits and (N, H, W) masks, all honouring 255 = ignore.

    from toolbox.segment import build_segment_loss
    loss = build_segment_loss("dice", num_classes=2)(logits, masks)

With one foreground class (two classes) the segmenter's logits are `[0, x]` (see
`toolbox.models` create_segmenter), and `dice` is the tutorial's binary `DiceLoss` on `x`:
sigmoid, flattened over the whole batch, `1 - (2·Σ(p·t) + 1) / (Σp + Σt + 1)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toolbox.errors import unknown_name

IGNORE_INDEX = 255


def _valid(logits: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, C) logits and (P,) class indices of the pixels that are not ignored; half-precision
    logits (autocast) are computed in float32."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])
    masks = masks.reshape(-1).long()
    keep = masks != IGNORE_INDEX
    return logits[keep], masks[keep]


def _mean(values: torch.Tensor) -> torch.Tensor:
    """Mean that is 0 (not NaN) for a batch whose pixels are all ignored."""
    return values.sum() / max(values.numel(), 1)


class BinaryDiceLoss(nn.Module):
    """The seed's `DiceLoss` on the foreground logit, with ignored pixels left out."""

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits, targets = _valid(logits, masks)
        inputs = torch.sigmoid(logits[:, 1])
        targets = targets.to(inputs.dtype)
        intersection = (inputs * targets).sum()
        dice = (2.0 * intersection + self.smooth) / (inputs.sum() + targets.sum() + self.smooth)
        return 1 - dice


class SoftmaxDiceLoss(nn.Module):
    """Dice over several classes: softmax probabilities against one-hot masks, the sums over
    every valid pixel of the batch, `1 - mean over classes of (2·Σ(p·t) + s) / (Σp + Σt + s)`."""

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits, targets = _valid(logits, masks)
        probs = logits.softmax(dim=1)
        one_hot = F.one_hot(targets, probs.shape[1]).to(probs.dtype)
        intersection = (probs * one_hot).sum(0)
        dice = (2.0 * intersection + self.smooth) / (probs.sum(0) + one_hot.sum(0) + self.smooth)
        return 1 - dice.mean()


class PixelCrossEntropy(nn.Module):
    """Per-pixel softmax cross-entropy (for two classes: binary cross-entropy on the logit)."""

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits, targets = _valid(logits, masks)
        return _mean(F.cross_entropy(logits, targets, reduction="none"))


class PixelFocalLoss(nn.Module):
    """Focal loss per pixel, `-(1 - p_t)**gamma * log(p_t)`, averaged over valid pixels."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits, targets = _valid(logits, masks)
        log_pt = logits.log_softmax(dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
        return _mean(-((1.0 - log_pt.exp()) ** self.gamma) * log_pt)


class SumLoss(nn.Module):
    """The sum of several losses (`ce+dice`)."""

    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, masks) for loss in self.losses)


def _dice(num_classes: int) -> nn.Module:
    return BinaryDiceLoss() if num_classes == 2 else SoftmaxDiceLoss()


@dataclass(frozen=True)
class SegmentLossInfo:
    """One `--loss` choice of `--task segment`: name, description, builder."""

    name: str
    description: str
    build: Callable[..., nn.Module]


SEGMENT_LOSSES: dict[str, SegmentLossInfo] = {info.name: info for info in (
    SegmentLossInfo("dice", "Dice: sigmoid on one foreground class (the tutorial's formula), "
                            "softmax Dice over classes otherwise",
                    lambda num_classes, **_: _dice(num_classes)),
    SegmentLossInfo("ce", "per-pixel cross-entropy", lambda **_: PixelCrossEntropy()),
    SegmentLossInfo("ce+dice", "cross-entropy plus Dice",
                    lambda num_classes, **_: SumLoss(PixelCrossEntropy(), _dice(num_classes))),
    SegmentLossInfo("focal", "per-pixel focal loss (--focal-gamma)",
                    lambda focal_gamma=2.0, **_: PixelFocalLoss(focal_gamma)),
)}


def build_segment_loss(name: str, *, num_classes: int, focal_gamma: float = 2.0) -> nn.Module:
    """The segmentation loss registered as `name`.

    Raises:
        ToolboxError: unknown name, with the valid ones as a hint.
    """
    info = SEGMENT_LOSSES.get(name)
    if info is None:
        raise unknown_name("segmentation loss", name, SEGMENT_LOSSES,
                           f"choose one of {', '.join(SEGMENT_LOSSES)}")
    return info.build(num_classes=num_classes, focal_gamma=focal_gamma)
