"""Classification (and segmentation-ready) losses as `nn.Module`s, and the registry `--loss` reads.

    from toolbox.losses import DiceLoss, FocalLoss
    loss = DiceLoss()(logits, targets)   # logits (N, C) or (N, C, H, W), integer targets

Every loss takes raw logits with classes on dim 1 and integer class targets, so the training loop
can swap them freely.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toolbox.errors import UsageError, unknown_name


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) in float32; float32 and float64 kept as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _one_hot(targets: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """Integer targets (N,) or (N, H, W) -> one-hot float in `like`'s (N, C, ...) layout."""
    one_hot = F.one_hot(targets.long(), num_classes).to(like.dtype)
    if one_hot.ndim > 2:  # (N, H, W, C) -> (N, C, H, W)
        one_hot = one_hot.movedim(-1, 1)
    return one_hot


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Softmax cross-entropy with optional label smoothing and per-class weights (torch's,
    kept for the registry; with weights, the mean is weighted: torch's rule)."""

    def __init__(self, label_smoothing: float = 0.0, weight: torch.Tensor | None = None
                 ) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): `-alpha * (1 - p_t)**gamma * log(p_t)`, averaged.

    With `gamma=0` and no `alpha` it equals cross-entropy. Easy examples (p_t near 1) are
    down-weighted, which helps with imbalanced classes. `weight` (C,) weighs each class (the
    per-class alpha of the paper); the mean is then weighted, as torch's cross-entropy does,
    so that with `gamma=0` it still equals weighted cross-entropy.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None,
                 weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(_upcast(logits), dim=1)
        log_pt = log_p.gather(1, targets.long().unsqueeze(1)).squeeze(1)
        loss = -((1.0 - log_pt.exp()) ** self.gamma) * log_pt
        if self.alpha is not None:
            loss = self.alpha * loss
        if self.weight is not None:
            weights = self.weight.to(loss.dtype)[targets.long()]
            return (weights * loss).sum() / weights.sum()
        return loss.mean()


class BCEWithLogitsLoss(nn.Module):
    """Multi-label style binary cross-entropy: one sigmoid per class against one-hot targets.

    Integer targets become one-hot (with optional label smoothing towards 0.5); float targets of
    shape (N, C) are used as they are (true multi-label). The mean is over every logit.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = _upcast(logits)
        if targets.dtype.is_floating_point and targets.shape == logits.shape:
            target = targets.to(logits.dtype)
        else:
            target = _one_hot(targets, logits.shape[1], logits)
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(logits, target)


class DiceLoss(nn.Module):
    """Soft Dice loss: `1 - (2|X∩Y| + s) / (|X| + |Y| + s)`.

    X is the softmax over classes (dim 1), Y the one-hot targets; the sums run over every element
    of the batch (as the widely used tutorial `DiceLoss` does on flattened tensors). Takes (N, C)
    classification logits with (N,) targets or (N, C, H, W) segmentation logits with (N, H, W)
    targets.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(_upcast(logits), dim=1)
        one_hot = _one_hot(targets, logits.shape[1], probs)
        intersection = (probs * one_hot).sum()
        dice = (2.0 * intersection + self.smooth) / (probs.sum() + one_hot.sum() + self.smooth)
        return 1.0 - dice


@dataclass(frozen=True)
class LossInfo:
    """One `--loss` choice: its name, a one-line description and how to build it."""

    name: str
    description: str
    build: Callable[..., nn.Module]
    takes_label_smoothing: bool = False
    takes_class_weights: bool = False


LOSSES: dict[str, LossInfo] = {info.name: info for info in (
    LossInfo("ce", "softmax cross-entropy (with --label-smoothing)",
             lambda label_smoothing=0.0, weight=None, **_: CrossEntropyLoss(label_smoothing,
                                                                            weight),
             takes_label_smoothing=True, takes_class_weights=True),
    LossInfo("focal", "focal loss, gamma 2: down-weights easy examples",
             lambda focal_gamma=2.0, weight=None, **_: FocalLoss(gamma=focal_gamma,
                                                                 weight=weight),
             takes_class_weights=True),
    LossInfo("bce", "multi-label style sigmoid + binary cross-entropy on one-hot targets",
             lambda label_smoothing=0.0, **_: BCEWithLogitsLoss(label_smoothing), True),
    LossInfo("dice", "soft Dice over softmax probabilities and one-hot targets (smooth 1)",
             lambda **_: DiceLoss()),
)}


def check_loss_options(name: str, *, label_smoothing: float = 0.0,
                       class_weights: bool = False) -> LossInfo:
    """The registry entry of `name`, once the options given with it are known to fit it
    (`FinetuneConfig.validate` asks before any data is read, `build_loss` again).

    Raises:
        UsageError: unknown name, or label smoothing or class weights for a loss that does
            not take them.
    """
    info = LOSSES.get(name)
    if info is None:
        raise unknown_name("loss", name, LOSSES, f"choose one of {', '.join(LOSSES)}",
                           param="--loss")
    if label_smoothing and not info.takes_label_smoothing:
        raise UsageError(f"--label-smoothing does not apply to the {name} loss",
                         "use it with --loss ce or --loss bce", param="--label-smoothing")
    if class_weights and not info.takes_class_weights:
        raise UsageError(f"--class-weights does not apply to the {name} loss",
                         "use it with --loss ce or --loss focal, or try --sampler balanced",
                         param="--class-weights")
    if not 0.0 <= label_smoothing < 1.0:
        raise UsageError(f"--label-smoothing must be in [0, 1), got {label_smoothing}",
                         param="--label-smoothing")
    return info


def build_loss(name: str, *, label_smoothing: float = 0.0, focal_gamma: float = 2.0,
               class_weights: Sequence[float] | None = None) -> nn.Module:
    """The loss registered as `name`, configured; `class_weights` (one per class) weigh each
    sample's loss by its class (`--class-weights auto`).

    Raises:
        UsageError: see `check_loss_options`.
    """
    info = check_loss_options(name, label_smoothing=label_smoothing,
                              class_weights=class_weights is not None)
    weight = (torch.as_tensor(class_weights, dtype=torch.float32)
              if class_weights is not None else None)
    return info.build(label_smoothing=label_smoothing, focal_gamma=focal_gamma, weight=weight)
