"""`--mixup` and `--cutmix`: timm's `Mixup` on each normalised training batch, with soft targets
and the soft-target cross-entropy they are trained with."""

from __future__ import annotations

import numpy as np
import torch

from toolbox.train.config import FinetuneConfig


class BatchMixer:
    """Mixes each training batch with its reverse and returns soft targets (rows sum to 1).

    `--label-smoothing` goes into the targets (timm's `label_smoothing`), as the soft-target
    loss has none of its own. timm's `Mixup` needs an even batch: the last sample of an odd one
    (a short final batch) is kept unmixed with its (smoothed) one-hot target.
    """

    def __init__(self, *, mixup: float, cutmix: float, label_smoothing: float,
                 num_classes: int, seed: int) -> None:
        from timm.data import Mixup

        self.num_classes, self.smoothing, self.seed = num_classes, label_smoothing, seed
        self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix,
                           label_smoothing=label_smoothing, num_classes=num_classes)

    def set_epoch(self, epoch: int) -> None:
        """Seed the mixing for `epoch`: timm draws from NumPy's global generator, so seeding it
        per epoch makes a run and its resumed twin mix alike."""
        np.random.seed((self.seed * 1_000_003 + epoch) % 2**32)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed inputs, soft targets (N, classes)) for a batch `x` with labels `y`."""
        from timm.data.mixup import mixup_target

        even = x.shape[0] - x.shape[0] % 2
        if even == 0:
            return x, mixup_target(y, self.num_classes, 1.0, self.smoothing)
        mixed, soft = self.mixup(x[:even], y[:even])  # mixes the view in place
        if even == x.shape[0]:
            return mixed, soft
        rest = mixup_target(y[even:], self.num_classes, 1.0, self.smoothing)
        return torch.cat([mixed, x[even:]]), torch.cat([soft, rest])


def batch_mixer(cfg: FinetuneConfig, num_classes: int) -> BatchMixer | None:
    """The run's mixer, or None when neither `--mixup` nor `--cutmix` is set."""
    if not (cfg.mixup or cfg.cutmix):
        return None
    return BatchMixer(mixup=cfg.mixup, cutmix=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                      num_classes=num_classes, seed=cfg.seed)


def soft_target_loss() -> torch.nn.Module:
    """Cross-entropy against soft targets (timm's), the training loss while mixing."""
    from timm.loss import SoftTargetCrossEntropy

    return SoftTargetCrossEntropy()


def hard_labels(targets: torch.Tensor) -> torch.Tensor:
    """The label a training batch's accuracy is counted against: the class with the largest
    share of a mixed (soft) target, so the train accuracy of a mixing run says how often the
    model picks the dominant class of what it sees; plain labels as they are."""
    return targets.argmax(dim=1) if targets.ndim == 2 else targets
