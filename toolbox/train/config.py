"""The resolved settings of one fine-tuning run (written to `args.yaml` and into checkpoints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from toolbox.errors import UsageError, unknown_name

AMP_DTYPES = ("auto", "fp16", "bf16")


@dataclass
class FinetuneConfig:
    """Every knob of `tb finetune`; the CLI builds one from its options."""

    # data
    data: str | None = None  # ImageFolder tree (with train/ and val/, or split)
    dataset: str | None = None  # a data set fetched by `tb datasets fetch`
    root: str | None = None
    val_split: float = 0.2
    img_size: int | None = None
    augment: str | None = None
    cache: bool | None = None  # None: decode once into memory when it fits the budget
    # model
    model: str = "resnet18"
    pretrained: bool = True
    weights: str | None = None
    freeze: bool = False
    unfreeze_at: int | None = None
    backbone_lr_scale: float = 0.1
    # training
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    opt: str = "adamw"
    momentum: float = 0.9
    grad_accum: int = 1
    clip_grad: float | None = None
    seed: int = 0
    workers: int | None = None
    device: str = "auto"
    channels_last: bool = False
    compile: bool = False
    amp: bool = False
    amp_dtype: str = "auto"
    sched: str = "cosine"
    warmup_epochs: int = 0
    step_size: int | None = None  # step: epochs between decays (default: a third of the run)
    milestones: list[int] = field(default_factory=list)  # multistep (default: 1/2 and 3/4)
    gamma: float = 0.1  # step, multistep, exponential decay factor
    loss: str = "ce"
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    # outputs
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (YAML and `weights_only` checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """Inverse of `to_dict`; unknown keys (from other versions) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def validate(self) -> None:
        """Raise a UsageError (exit 2) for values no run can use."""
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            (self.weight_decay >= 0, "--weight-decay must not be negative"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (0.0 < self.val_split < 1.0, "--val-split must be between 0 and 1"),
            (self.img_size is None or self.img_size >= 8, "--img-size must be at least 8"),
            (self.warmup_epochs >= 0, "--warmup-epochs must not be negative"),
            (self.clip_grad is None or self.clip_grad > 0, "--clip-grad must be positive"),
            (self.backbone_lr_scale > 0, "--backbone-lr-scale must be positive"),
            (self.workers is None or self.workers >= 0, "--workers must not be negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        from toolbox.losses import LOSSES
        from toolbox.train.optim import OPTIMIZERS, SCHEDULERS

        for kind, flag, value, table in (("optimizer", "--opt", self.opt, OPTIMIZERS),
                                         ("scheduler", "--sched", self.sched, SCHEDULERS),
                                         ("loss", "--loss", self.loss, LOSSES),
                                         ("mixed precision dtype", "--amp-dtype",
                                          self.amp_dtype, AMP_DTYPES)):
            if value not in table:
                raise unknown_name(kind, value, table, f"choose one of {', '.join(table)}",
                                   param=flag)
        if self.unfreeze_at is not None:
            if not self.freeze:
                raise UsageError("--unfreeze-at needs --freeze",
                                   "add --freeze to train the head first")
            if not 1 <= self.unfreeze_at <= self.epochs:
                raise UsageError(f"--unfreeze-at must be an epoch in 1..{self.epochs}")
        if self.warmup_epochs >= self.epochs and self.sched != "none":
            raise UsageError("--warmup-epochs must be smaller than --epochs")
        if self.data and self.dataset:
            raise UsageError("pass either --data or --dataset, not both")
