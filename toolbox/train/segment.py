"""`tb finetune --task segment`: the trainer's segmentation hooks (data pairs, encoder-decoder
model, pixel losses, IoU/Dice metrics, overlay grids); the loop itself is the classifier's."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from toolbox import runs
from toolbox.devices import default_workers
from toolbox.errors import UsageError
from toolbox.models import DECODER, ModelMeta, create_segmenter, data_config
from toolbox.segment import (
    PreparedPairs,
    SegmentMeter,
    SegmentScores,
    build_segment_loss,
    foreground_mean,
    load_segment_splits,
    resize_pair,
)
from toolbox.tensorboard import tensorboard_command
from toolbox.train.checkpoint import check_classes, load_model_state, row_dict
from toolbox.train.data import BatchLoader, ShardLoader
from toolbox.train.ema import ema_columns, ema_scalars
from toolbox.train.metrics import write_metrics_csv
from toolbox.train.modeling import TrainableModel
from toolbox.train.results import FinetuneResult
from toolbox.train.run_data import RunData
from toolbox.train.trainer import Trainer

OVERLAY_IMAGES = 8  # validation images shown in TensorBoard each epoch
SEGMENT_COLUMNS = ("epoch", "train_loss", "train_pixel_acc", "val_loss", "val_pixel_acc",
                   "val_miou", "val_dice", "lr", "images_per_s", "epoch_time_s")


@dataclass
class SegmentEpochRow:
    """One epoch of a segmentation run (a row of metrics.csv)."""

    SCORE: ClassVar[str] = "val_miou"  # the figure that picks the best epoch
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
    ema_val_loss: float | None = None  # with --ema: the averaged weights' validation
    ema_val_miou: float | None = None
    saved: str = ""  # "raw" or "ema" when this epoch's weights became model.safetensors


def iou_column(name: str) -> str:
    """metrics.csv column of a class's validation IoU."""
    return f"val_iou_{name}"


def build_segment_model(*, model: str, class_names: list[str], decoder: str, pretrained: bool,
                        img_size: int | None, seed: int) -> TrainableModel:
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
                     resize="squash", task="segment", decoder=decoder)
    return TrainableModel(net, DECODER, meta, [], warnings, f"{source}, {decoder} decoder")


class SegmentTrainer(Trainer):
    """The fine-tuning loop with segmentation's data, model, loss, metrics and pictures."""

    row_type = SegmentEpochRow

    def _prepare(self) -> tuple[Any, TrainableModel, ModelMeta, RunData]:
        cfg, ctx, saved = self.cfg, self.ctx, self.saved
        if cfg.weights is not None:
            raise UsageError("--weights is not supported with --task segment yet",
                             "start from the hub's encoder weights (--pretrained)")
        workers = cfg.workers if cfg.workers is not None else default_workers(cap=8)
        splits = load_segment_splits(data=cfg.data, val_split=cfg.val_split, seed=cfg.seed,
                                     workers=workers)
        self.classes = splits.classes
        if saved is not None:
            check_classes(saved, splits.classes)
        built = build_segment_model(model=cfg.model, class_names=splits.classes,
                                    decoder=cfg.decoder,
                                    pretrained=cfg.pretrained and saved is None,
                                    img_size=cfg.img_size, seed=cfg.seed)
        meta = ModelMeta.from_dict(saved["meta"]) if saved is not None else built.meta
        if saved is not None:
            load_model_state(built.model, saved, self.resumed_from, cfg.model)
        built.model.to(self.device)
        if cfg.channels_last:
            built.model.to(memory_format=torch.channels_last)
        if cfg.augment:
            from toolbox.augment import build_augmenter

            build_augmenter(cfg.augment, seed=cfg.seed)  # fail fast on a bad spec
        # Each rank decodes and keeps only its share, as classification does.
        rank, world = ctx.rank, ctx.world_size
        train = PreparedPairs(splits.train[rank::world], meta, workers=workers,
                              progress=self.progress, label="training pairs")
        val = PreparedPairs(splits.val[rank::world], meta, workers=workers,
                            progress=self.progress, label="validation pairs")
        per_rank = math.ceil(len(splits.train) / world)  # every rank pads to rank 0's share
        loader = BatchLoader(
            train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, workers=workers,
            rank=rank, world_size=world, length=per_rank if world > 1 else None,
            augment=cfg.augment, drop_last=per_rank > cfg.batch_size,
            pin_memory=self.device.type == "cuda",
            dataset=AugmentedPairs(train, cfg.augment, cfg.seed) if cfg.augment else None)
        val_loader = ShardLoader(val, list(range(len(val))), batch_size=cfg.batch_size * 2,
                                 workers=0)
        # Pairs left out while matching count in the run's skipped total, as unreadable ones do.
        return splits, built, meta, RunData(train, val, loader, val_loader, True,
                                            probed=splits.skipped, unit="image/mask pair(s)")

    def _loss(self) -> Any:
        return build_segment_loss(self.cfg.loss, num_classes=len(self.classes),
                                  focal_gamma=self.cfg.focal_gamma)

    def _meter(self) -> SegmentMeter:
        return SegmentMeter(len(self.state.classes), self.device)

    def _row(self, epoch: int, train: SegmentScores, val: SegmentScores,
             **common: Any) -> SegmentEpochRow:
        return SegmentEpochRow(
            epoch=epoch, train_loss=train.loss, train_pixel_acc=train.pixel_acc,
            val_loss=val.loss, val_pixel_acc=val.pixel_acc, val_miou=val.miou,
            val_dice=val.mean_dice, per_class=val.iou, per_class_dice=val.dice, **common)

    def _write_metrics(self) -> None:
        classes = self.state.classes
        columns = (SEGMENT_COLUMNS + (ema_columns(SegmentEpochRow) if self.cfg.ema else ())
                   + tuple(iou_column(name) for name in classes))
        rows = [{**row_dict(row), **{iou_column(name): iou for name, iou in
                                     zip(classes, row.per_class, strict=True)}}
                for row in self.state.history]
        write_metrics_csv(self.run_dir / runs.METRICS_FILE, rows, columns)

    def _log_epoch(self, log: Any, row: SegmentEpochRow, lrs: dict[str, float]) -> None:
        writer = log.writer
        if writer is None:
            return
        scalars = [("loss/train", row.train_loss), ("loss/val", row.val_loss),
                   ("pixel_acc/train", row.train_pixel_acc),
                   ("pixel_acc/val", row.val_pixel_acc), ("miou/val", row.val_miou),
                   ("dice/val", row.val_dice), ("throughput/images_per_s", row.images_per_s),
                   *((f"iou_val/{name}", iou) for name, iou in
                     zip(self.state.classes, row.per_class, strict=True)),
                   *((f"lr/{name}", lr) for name, lr in lrs.items()),
                   *ema_scalars(row, "miou")]
        for tag, value in scalars:
            writer.add_scalar(tag, value, row.epoch)
        self._log_val_images(writer, row.epoch)
        writer.flush()

    def _log_val_images(self, writer: Any, epoch: int) -> None:
        """A grid of image | prediction | true mask rows for the first validation images."""
        from toolbox.segment.overlay import overlay
        from toolbox.tensorboard import add_image, image_grid
        from toolbox.train.engine import to_input

        val = self.data.val
        n = min(OVERLAY_IMAGES, len(val))
        images = val.tensor[:n]
        masks = val.targets[:n].numpy()
        self.model.eval()
        with torch.no_grad():
            logits = self.model(to_input(images, self.state.meta, self.device,
                                         self.cfg.channels_last))
        preds = logits.argmax(dim=1).cpu().numpy()
        tiles = []
        for image, pred, mask in zip(images.permute(0, 2, 3, 1).numpy(), preds, masks,
                                     strict=True):
            rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
            tiles += [rgb, overlay(rgb, pred), overlay(rgb, mask)]
        add_image(writer, "val/image_prediction_mask", image_grid(tiles, nrow=3), epoch)

    def _result(self, start: Any) -> SegmentResult:
        state = self.state
        best = next((r for r in state.history if r.epoch == state.best_epoch),
                    state.history[-1])
        return SegmentResult(
            run_dir=self.run_dir, model_file=self.run_dir / runs.MODEL_FILE,
            epochs=list(state.history), best_epoch=state.best_epoch,
            best_val_acc1=state.best_acc1, final_val_acc1=state.history[-1].val_miou,
            per_class_acc=dict(zip(state.classes, best.per_class, strict=False)),
            class_names=list(state.classes),
            tensorboard_command=tensorboard_command(self.run_dir), lr=float(self.cfg.lr),
            resumed_from=self.resumed_from, start=start, best_val_miou=state.best_acc1,
            best_val_dice=foreground_mean(best.per_class_dice),  # of the weights kept
            per_class_dice=dict(zip(state.classes, best.per_class_dice, strict=False)))


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

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[Any, Any, None, int]:
        from toolbox.augment import augment_with_mask, build_augmenter
        from toolbox.train.sampling import sample_seed

        epoch, index, repeat = item
        if self._augmenter is None:
            self._augmenter = build_augmenter(self.augment, seed=self.seed)
        image = self.pairs.tensor[index].permute(1, 2, 0).numpy()
        mask = self.pairs.targets[index].numpy()
        image, mask = augment_with_mask(self._augmenter, image, mask,
                                        sample_seed(self.seed, epoch, index, repeat))
        tensor, target = resize_pair(image, mask, self.pairs.meta)
        return tensor, target, None, index
