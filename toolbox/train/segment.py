"""`tb finetune --task segment`: the trainer's segmentation hooks (data pairs, encoder-decoder
model, pixel losses, IoU/Dice metrics, overlay grids); the loop itself is the classifier's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolbox.errors import UsageError
from toolbox.models import DECODER, ModelMeta, create_segmenter, data_config
from toolbox.segment import (
    PreparedPairs,
    SegmentMeter,
    SegmentScores,
    build_segment_loss,
    load_segment_splits,
    resize_pair,
)
from toolbox.train.modeling import BuiltModel
from toolbox.train.results import FinetuneResult
from toolbox.train.trainer import Prepared, Trainer

OVERLAY_IMAGES = 8  # validation images shown in TensorBoard each epoch
SEGMENT_COLUMNS = ("epoch", "train_loss", "train_pixel_acc", "val_loss", "val_pixel_acc",
                   "val_miou", "val_dice", "lr", "images_per_s", "epoch_time_s")


@dataclass
class SegmentEpochRow:
    """One epoch of a segmentation run (a row of metrics.csv)."""

    epoch: int
    train_loss: float
    train_pixel_acc: float
    val_loss: float
    val_pixel_acc: float
    val_miou: float
    val_dice: float  # mean over the foreground classes: the foreground Dice when binary
    lr: float
    images_per_s: float
    epoch_time_s: float
    frozen: bool = False
    per_class: list[float] = field(default_factory=list)  # validation IoU per class
    per_class_dice: list[float] = field(default_factory=list)


def iou_column(name: str) -> str:
    """metrics.csv column of a class's validation IoU."""
    return f"val_iou_{name}"


def build_segment_model(*, model: str, class_names: list[str], decoder: str, pretrained: bool,
                        img_size: int | None, seed: int) -> BuiltModel:
    """The encoder-decoder for `class_names`, from hub weights (when `pretrained`) or random.

    Raises:
        ToolboxError: unknown model or decoder, an encoder without `features_only`.
    """
    import torch

    from toolbox.models import PretrainedWeightsUnavailable, resolve_model

    warnings: list[str] = []
    torch.manual_seed(seed)
    source = "pretrained encoder" if pretrained else "random"
    try:
        net = create_segmenter(model, num_classes=len(class_names), decoder=decoder,
                               pretrained=pretrained)
    except PretrainedWeightsUnavailable as exc:
        warnings.append(f"{exc.message}; starting from random initialisation (pass "
                        f"--no-pretrained to silence this)")
        torch.manual_seed(seed)
        net, source = create_segmenter(model, num_classes=len(class_names),
                                       decoder=decoder), "random"
    cfg = data_config(net.encoder, img_size)
    meta = ModelMeta(model=resolve_model(model).name, num_classes=len(class_names),
                     class_names=list(class_names), input_size=tuple(cfg["input_size"]),
                     mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                     interpolation=str(cfg["interpolation"]), crop_pct=1.0,
                     task="segment", decoder=decoder)
    return BuiltModel(net, DECODER, meta, [], warnings, f"{source}, {decoder} decoder")


class SegmentTrainer(Trainer):
    """The fine-tuning loop with segmentation's data, model, loss, metrics and pictures."""

    row_type = SegmentEpochRow

    def _prepare(self, workers: int) -> Prepared:
        cfg = self.cfg
        if cfg.weights is not None:
            raise UsageError("--weights is not supported with --task segment yet",
                               "start from the hub's encoder weights (--pretrained)")
        splits = load_segment_splits(data=cfg.data, val_split=cfg.val_split, seed=cfg.seed,
                                     workers=workers)
        self.classes = splits.classes
        self._check_resumed_classes()
        built = build_segment_model(model=cfg.model, class_names=self.classes,
                                    decoder=cfg.decoder,
                                    pretrained=cfg.pretrained and self.state is None,
                                    img_size=cfg.img_size, seed=cfg.seed)
        if splits.skipped:
            first = splits.skipped[0]
            built.warnings.append(f"skipped {len(splits.skipped)} image/mask pair(s), e.g. "
                                  f"{first.path}: {first.reason}")
        meta = ModelMeta.from_dict(self.state["meta"]) if self.state is not None else built.meta
        if cfg.augment:
            from toolbox.augment import build_augmenter

            build_augmenter(cfg.augment, seed=cfg.seed)  # fail fast on a bad spec
        # Each rank decodes and keeps only its share, as classification does.
        rank, world = self.ctx.rank, self.ctx.world_size
        train = PreparedPairs(splits.train[rank::world], meta, workers=workers,
                              progress=self.progress, label="training pairs")
        val = PreparedPairs(splits.val[rank::world], meta, workers=workers,
                            progress=self.progress, label="validation pairs")
        return Prepared(built, train, val, splits.description, cached=True,
                        train_total=len(splits.train))

    def _loss(self) -> Any:
        return build_segment_loss(self.cfg.loss, num_classes=len(self.classes),
                                  focal_gamma=self.cfg.focal_gamma)

    def _augmented_dataset(self) -> Any:
        if not self.cfg.augment:
            return None
        return AugmentedPairs(self.train_images, self.cfg.augment, self.cfg.seed)

    def _meter(self) -> SegmentMeter:
        return SegmentMeter(len(self.classes), self.device)

    def _row(self, epoch: int, train: SegmentScores, val: SegmentScores,
             **common: Any) -> SegmentEpochRow:
        return SegmentEpochRow(
            epoch=epoch, train_loss=train.loss, train_pixel_acc=train.pixel_acc,
            val_loss=val.loss, val_pixel_acc=val.pixel_acc, val_miou=val.miou,
            val_dice=val.mean_dice, per_class=val.iou, per_class_dice=val.dice, **common)

    def _score(self, row: SegmentEpochRow) -> float:
        return row.val_miou

    def _csv_columns(self) -> tuple[str, ...]:
        return SEGMENT_COLUMNS + tuple(iou_column(name) for name in self.classes)

    def _csv_row(self, row: SegmentEpochRow) -> dict[str, Any]:
        ious = {iou_column(name): iou for name, iou in zip(self.classes, row.per_class,
                                                           strict=True)}
        return {**vars(row), **ious}

    def _log_scalars(self, row: SegmentEpochRow) -> list[tuple[str, float]]:
        return [("loss/train", row.train_loss), ("loss/val", row.val_loss),
                ("pixel_acc/train", row.train_pixel_acc), ("pixel_acc/val", row.val_pixel_acc),
                ("miou/val", row.val_miou), ("dice/val", row.val_dice),
                ("throughput/images_per_s", row.images_per_s),
                *((f"iou_val/{name}", iou) for name, iou in
                  zip(self.classes, row.per_class, strict=True))]

    def _log_grid(self, writer: Any, batch: Any, epoch: int) -> None:
        """The overlay grid of `_log_val_images` replaces the plain training-image grid."""

    def _log_val_images(self, writer: Any, epoch: int) -> None:
        """A grid of image | prediction | true mask rows for the first validation images."""
        if writer is None:
            return
        import torch

        from toolbox.segment.overlay import overlay
        from toolbox.tensorboard import add_image, image_grid
        from toolbox.train.engine import to_input

        n = min(OVERLAY_IMAGES, len(self.val_images))
        images = self.val_images.tensor[:n]
        masks = self.val_images.targets[:n].numpy()
        self.model.eval()
        with torch.no_grad():
            logits = self.model(to_input(images, self.meta, self.device,
                                         self.cfg.channels_last))
        preds = logits.argmax(dim=1).cpu().numpy()
        tiles = []
        for image, pred, mask in zip(images.permute(0, 2, 3, 1).numpy(), preds, masks,
                                     strict=True):
            rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
            tiles += [rgb, overlay(rgb, pred), overlay(rgb, mask)]
        add_image(writer, "val/image_prediction_mask", image_grid(tiles, nrow=3), epoch)

    def _result(self) -> FinetuneResult:
        result = super()._result()
        best = next((r for r in self.history if r.epoch == self.best_epoch), self.history[-1])
        return SegmentResult(**vars(result), best_val_miou=best.val_miou,
                             best_val_dice=best.val_dice,
                             per_class_dice=dict(zip(self.classes, best.per_class_dice,
                                                     strict=False)))


@dataclass
class SegmentResult(FinetuneResult):
    """A finished segmentation run. `best_val_acc1`/`final_val_acc1` hold validation mIoU and
    `per_class_acc` the per-class IoU (the selection figures of the shared loop)."""

    best_val_miou: float = float("nan")
    best_val_dice: float = float("nan")
    per_class_dice: dict[str, float] = field(default_factory=dict)


class AugmentedPairs:
    """Training pairs with `--augment` applied to image and mask together in the loader's
    workers, seeded per (run seed, epoch, sample) like classification's augmentation."""

    def __init__(self, pairs: PreparedPairs, augment: str, seed: int) -> None:
        self.pairs = pairs
        self.augment = augment
        self.seed = seed
        self._augmenter: Any = None  # built lazily, once per worker process

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Any, Any, None]:
        from toolbox.augment import augment_with_mask, build_augmenter
        from toolbox.train.data import sample_seed

        epoch, index = item
        if self._augmenter is None:
            self._augmenter = build_augmenter(self.augment, seed=self.seed)
        image = self.pairs.tensor[index].permute(1, 2, 0).numpy()
        mask = self.pairs.targets[index].numpy()
        image, mask = augment_with_mask(self._augmenter, image, mask,
                                        sample_seed(self.seed, epoch, index))
        tensor, target = resize_pair(image, mask, self.pairs.meta)
        return tensor, target, None
