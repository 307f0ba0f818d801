"""The resolved settings of one fine-tuning run (written to `args.yaml` and into checkpoints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from toolbox.errors import UsageError, unknown_name

AMP_DTYPES = ("auto", "fp16", "bf16")
TASKS = {"classify": "one label an image", "segment": "one label a pixel (image/mask pairs)"}
DEFAULT_MODEL = "tf_efficientnet_lite0"  # ImageNet weights ship in a package: works offline
DEMO_IMG_SIZE = 64  # the demo digits (8x8) are upscaled to this; measured, see README "Defaults"

# Peak learning rate when --lr is not given, by what trains. A frozen backbone is a linear probe
# and wants a much larger step than full fine-tuning. Measured with the frozen pretrained
# default model on the demo digits (5 epochs, AdamW, cosine); see README "Defaults".
DEFAULT_LR = {"frozen": 3e-2, "partly frozen": 1e-2, "full": 1e-3}


@dataclass
class FinetuneConfig:
    """Every knob of `tb finetune`; the CLI builds one from its options."""

    task: str = "classify"  # or "segment": image/mask pairs, encoder-decoder model
    # data
    data: str | None = None  # ImageFolder tree (with train/ and val/, or split)
    dataset: str | None = None  # a data set fetched by `tb datasets fetch`
    root: str | None = None
    # a CSV table (`--labels FILE` beside `--data IMAGES_DIR`, or `--data labels.csv`)
    labels: str | None = None
    path_column: str | None = None  # None: the first column that names existing files
    label_column: str | None = None  # None: "label"
    split_column: str | None = None  # values train/val, instead of --val-split
    val_data: str | None = None  # validation data of its own (a folder, a CSV or shards)
    shuffle_buffer: int = 1000  # shards: samples mixed in each loader worker's buffer
    val_split: float = 0.2
    img_size: int | None = None
    augment: str | None = None
    cache: bool | None = None  # None: decode once into memory when it fits the budget
    resize: str = "crop"  # crop | squash | letterbox: how images meet the input size
    sampler: str = "shuffle"  # or "balanced": every class drawn equally often (train.balance)
    # --freeze: the backbone's features computed once and kept on disk (train.feature_data)
    feature_cache: bool = True
    feature_cache_dir: str | None = None  # None: features/ in tb's cache dir
    # model
    model: str = DEFAULT_MODEL
    pretrained: bool = True
    weights: str | None = None
    decoder: str = "fpn"  # segmentation decoder over the model's features (fpn, unet)
    freeze: bool = False
    unfreeze_at: int | None = None
    backbone_lr_scale: float = 0.1
    layer_decay: float | None = None  # timm's layer-wise lr decay (None: off)
    # training
    epochs: int = 5
    batch_size: int = 64
    lr: float | None = None  # None: DEFAULT_LR for the training mode (see `resolve_lr`)
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
    class_weights: str = "none"  # or "auto": inverse class frequency (train.balance)
    mixup: float = 0.0  # timm's Mixup alpha (Beta(a, a) mixing); 0 is off
    cutmix: float = 0.0  # CutMix alpha; 0 is off
    ema: bool = False  # keep an EMA of the weights, validate it too, keep the better
    ema_decay: float = 0.9998  # reached after timm's warm-up
    patience: int | None = None  # stop after this many epochs without improvement
    min_delta: float = 0.0  # the smallest val accuracy gain that counts as one
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

    @property
    def mode(self) -> str:
        """What trains: "frozen" (only the head), "partly frozen" (--unfreeze-at) or "full"."""
        if not self.freeze:
            return "full"
        return "frozen" if self.unfreeze_at is None else "partly frozen"

    def resolve_lr(self) -> str | None:
        """Fill in `lr` from DEFAULT_LR when it was not given; return why, for the start table
        (None when the user chose it)."""
        if self.lr is not None:
            return None
        self.lr = DEFAULT_LR[self.mode]
        return f"default for {self.mode} training; --lr overrides"

    def validate(self) -> None:
        """Raise a UsageError (exit 2) for values no run can use."""
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr is None or self.lr > 0, "--lr must be positive"),
            (self.weight_decay >= 0, "--weight-decay must not be negative"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (0.0 < self.val_split < 1.0, "--val-split must be between 0 and 1"),
            (self.img_size is None or self.img_size >= 8, "--img-size must be at least 8"),
            (self.warmup_epochs >= 0, "--warmup-epochs must not be negative"),
            (all(m >= 1 for m in self.milestones),
             "--milestones must be epoch numbers of at least 1"),
            (self.clip_grad is None or self.clip_grad > 0, "--clip-grad must be positive"),
            (self.backbone_lr_scale > 0, "--backbone-lr-scale must be positive"),
            (self.workers is None or self.workers >= 0, "--workers must not be negative"),
            (self.shuffle_buffer >= 0, "--shuffle-buffer must not be negative"),
            (self.mixup >= 0 and self.cutmix >= 0, "--mixup and --cutmix must not be negative"),
            (0.0 < self.ema_decay < 1.0, "--ema-decay must be between 0 and 1"),
            (self.patience is None or self.patience >= 1, "--patience must be at least 1"),
            (self.min_delta >= 0, "--min-delta must not be negative"),
            (self.layer_decay is None or 0.0 < self.layer_decay <= 1.0,
             "--layer-decay must be in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        from toolbox.losses import LOSSES, check_loss_options
        from toolbox.models import RESIZE_MODES
        from toolbox.train.balance import CLASS_WEIGHTS, SAMPLERS
        from toolbox.train.optim import OPTIMIZERS, SCHEDULERS

        if self.task not in TASKS:
            raise unknown_name("task", self.task, TASKS, f"choose one of {', '.join(TASKS)}",
                               param="--task")
        losses: dict = LOSSES
        if self.task == "segment":
            from toolbox.models import DECODERS
            from toolbox.segment import SEGMENT_LOSSES

            losses = SEGMENT_LOSSES
            if self.decoder not in DECODERS:
                raise unknown_name("decoder", self.decoder, DECODERS,
                                   f"choose one of {', '.join(DECODERS)}", param="--decoder")
            if self.data is None:
                raise UsageError("--task segment needs --data DIR",
                                 "DIR/train/images/* with DIR/train/masks/<same name>.png; "
                                 "make one with `tb datasets fetch fashion-mnist "
                                 "--export-segmentation DIR`")
            if self.label_smoothing:
                raise UsageError("--label-smoothing does not apply to --task segment")
            table = [f for f, v in (("--labels", self.labels), ("--val-data", self.val_data),
                                    ("--split-column", self.split_column)) if v]
            if table or str(self.data).lower().endswith(".csv") or ".tar" in str(self.data):
                raise UsageError("--task segment reads a folder of images and masks, not a "
                                 "CSV or shards", param=table[0] if table else "--data")
            # Masks are resized whole with their images (every pixel keeps a label), and
            # per-pixel classes have no per-image counts to balance.
            for flag, value, default in (("--resize", self.resize, "crop"),
                                         ("--sampler", self.sampler, "shuffle"),
                                         ("--class-weights", self.class_weights, "none")):
                if value != default:
                    raise UsageError(f"{flag} {value} does not apply to --task segment",
                                     f"drop {flag}", param=flag)
            if self.mixup or self.cutmix:
                raise UsageError("--mixup and --cutmix do not apply to --task segment",
                                 "drop them; they mix whole-image labels")
        elif (self.mixup or self.cutmix) and self.loss != "ce":
            raise UsageError(f"--mixup and --cutmix train on soft targets, which the "
                             f"{self.loss} loss cannot take", "use --loss ce (the default)")
        elif (self.mixup or self.cutmix) and self.class_weights != "none":
            raise UsageError("--class-weights does not apply with --mixup or --cutmix (the "
                             "soft-target loss takes no class weights)",
                             "balance the classes with --sampler balanced instead",
                             param="--class-weights")
        for kind, flag, value, table in (("optimizer", "--opt", self.opt, OPTIMIZERS),
                                         ("scheduler", "--sched", self.sched, SCHEDULERS),
                                         ("loss", "--loss", self.loss, losses),
                                         ("mixed precision dtype", "--amp-dtype",
                                          self.amp_dtype, AMP_DTYPES),
                                         ("resize mode", "--resize", self.resize, RESIZE_MODES),
                                         ("sampler", "--sampler", self.sampler, SAMPLERS),
                                         ("class weighting", "--class-weights",
                                          self.class_weights, CLASS_WEIGHTS)):
            if value not in table:
                raise unknown_name(kind, value, table, f"choose one of {', '.join(table)}",
                                   param=flag)
        if self.task == "classify":
            check_loss_options(self.loss, label_smoothing=self.label_smoothing,
                               class_weights=self.class_weights != "none")
        if self.amp_dtype != "auto" and not self.amp:  # it would be ignored without a word
            raise UsageError(f"--amp-dtype {self.amp_dtype} has no effect without --amp",
                             "add --amp, or drop --amp-dtype", param="--amp-dtype")
        if self.unfreeze_at is not None:
            if not self.freeze:
                raise UsageError("--unfreeze-at needs --freeze",
                                   "add --freeze to train the head first")
            if not 1 <= self.unfreeze_at <= self.epochs:
                raise UsageError(f"--unfreeze-at must be an epoch in 1..{self.epochs}")
        if self.warmup_epochs >= self.epochs and self.sched != "none":
            raise UsageError("--warmup-epochs must be smaller than --epochs")
        if self.feature_cache_dir and not self.feature_cache:
            raise UsageError("--feature-cache DIR and --no-feature-cache contradict each other",
                             "drop one of them", param="--feature-cache")
        if self.data and self.dataset:
            raise UsageError("pass either --data or --dataset, not both")
        if self.labels and not self.data:
            raise UsageError("--labels FILE needs --data IMAGES_DIR (where its paths start)",
                             param="--labels")
