"""The trainer of one fine-tuning run: set-up, the epoch loop, checkpoints and TensorBoard."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolbox import runs
from toolbox.devices import default_workers
from toolbox.errors import ToolboxError
from toolbox.fileio import atomic_write_text
from toolbox.losses import build_loss
from toolbox.models import ModelMeta, save_safetensors
from toolbox.progress import NullProgress, Progress
from toolbox.tensorboard import tensorboard_command
from toolbox.train import data as data_mod
from toolbox.train.checkpoint import save_checkpoint
from toolbox.train.config import FinetuneConfig
from toolbox.train.distributed import DistContext
from toolbox.train.engine import NonFiniteLoss, amp_setup, train_epoch, validate
from toolbox.train.metrics import CSV_COLUMNS, Meter, topk_for, write_metrics_csv
from toolbox.train.modeling import (
    BuiltModel,
    build_model,
    is_head,
    parameter_counts,
    set_frozen,
    train_mode,
)
from toolbox.train.optim import LrSchedule, build_optimizer, current_lrs
from toolbox.train.results import EpochRow, FinetuneResult, RunStart

GRID_IMAGES = 32


@dataclass
class Prepared:
    """What a task's `_prepare` hands the trainer: model, decoded data, how it was found."""

    built: BuiltModel
    train: Any  # PreparedImages-like: `tensor`, `targets`, `skipped`
    val: Any
    description: str
    cached: bool
    train_total: int  # the whole training split (a rank holds its share of it)


def _not_images_note(skipped: list[Any]) -> list[str]:
    if not skipped:
        return []
    shown = ", ".join(f"{s.path} ({s.reason})" for s in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return [f"left out {len(skipped)} file(s) that are not images: {shown}{more}"]


def _frozen_at(cfg: FinetuneConfig, epoch: int) -> bool:
    return cfg.freeze and (cfg.unfreeze_at is None or epoch < cfg.unfreeze_at)


def _row_dict(row: EpochRow) -> dict[str, Any]:
    return {k: getattr(row, k) for k in row.__dataclass_fields__}


class Trainer:
    """The state of one run between epochs (kept in one place so checkpoints capture it all)."""

    def __init__(self, cfg: FinetuneConfig, ctx: DistContext, device: torch.device,
                 run_dir: Path, state: dict[str, Any] | None, resumed_from: Path | None,
                 progress: Progress, on_start: Callable | None, on_epoch: Callable | None,
                 lr_note: str | None = None) -> None:
        self.cfg, self.ctx, self.device, self.run_dir = cfg, ctx, device, run_dir
        self.lr_note = lr_note  # why cfg.lr, when the mode chose it
        self.state, self.resumed_from = state, resumed_from
        self.progress = progress if ctx.is_main else NullProgress()
        self.on_start, self.on_epoch = on_start, on_epoch
        self.history: list[EpochRow] = []
        self.best_acc1, self.best_epoch = -1.0, 0
        self.epoch = 0  # completed epochs

    # -- set-up ---------------------------------------------------------------------------
    def _setup(self) -> RunStart:
        cfg, ctx = self.cfg, self.ctx
        workers = cfg.workers if cfg.workers is not None else default_workers(cap=8)
        prepared = self._prepare(workers)
        built = prepared.built
        self.model, self.head = built.model, built.head
        self.meta = (ModelMeta.from_dict(self.state["meta"]) if self.state is not None
                     else built.meta)
        if self.state is not None:
            try:
                self.model.load_state_dict(self.state["model"])
            except RuntimeError as exc:
                raise ToolboxError(f"checkpoint {self.resumed_from} does not fit "
                                   f"{cfg.model}: {str(exc).splitlines()[0]}",
                                   "resume with the checkpoint's own run folder") from exc
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_fn = self._loss().to(self.device)
        self.amp = amp_setup(self.device, cfg.amp, cfg.amp_dtype)
        self.train_images, self.val_images = prepared.train, prepared.val
        # Rank 0's share is the largest: every rank pads its epoch to that many samples.
        per_rank = math.ceil(prepared.train_total / ctx.world_size)
        self.loader = data_mod.BatchLoader(
            self.train_images, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
            workers=workers, rank=ctx.rank, world_size=ctx.world_size,
            length=per_rank if ctx.enabled else None, augment=cfg.augment,
            drop_last=per_rank > cfg.batch_size, pin_memory=self.device.type == "cuda",
            dataset=self._augmented_dataset())
        self.val_loader = data_mod.ShardLoader(
            self.val_images, list(range(len(self.val_images))),
            batch_size=cfg.batch_size * 2, workers=workers if not prepared.cached else 0)
        skipped = self.train_images.skipped + self.val_images.skipped
        # Under torchrun each rank read only its share: count the unreadable files of all.
        counts = ctx.all_reduce_sum([len(self.train_images), len(self.val_images), len(skipped)])
        if counts[2]:
            example = f", e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""
            built.warnings.append(f"skipped {int(counts[2])} unreadable image(s){example}")

        self.optimizer = build_optimizer(
            self.model, self.head, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            backbone_lr_scale=cfg.backbone_lr_scale if cfg.unfreeze_at is not None else 1.0)
        steps = math.ceil(self.loader.num_batches() / cfg.grad_accum)
        self.schedule = LrSchedule(self.optimizer, cfg, steps)
        torch.manual_seed(cfg.seed + 1)  # dropout and friends, independent of the model init
        if self.state is not None:
            self._restore(self.state)
        set_frozen(self.model, self.head, _frozen_at(cfg, self.epoch + 1))
        self._wrap()
        total, trainable, frozen = parameter_counts(self.model)
        return RunStart(
            run_dir=self.run_dir, data=prepared.description,
            train_images=int(counts[0]), val_images=int(counts[1]),
            classes=self.classes, model=self.meta.model,
            weights=(built.weights_source if self.state is None
                     else f"checkpoint {self.resumed_from}"),
            input_size=tuple(self.meta.input_size), total_params=total,
            trainable_params=trainable, frozen_params=frozen, device=str(self.device),
            amp=self.amp.label, world_size=ctx.world_size, epochs=cfg.epochs,
            start_epoch=self.epoch + 1, cached=prepared.cached,
            topk=topk_for(len(self.classes)), lr=float(cfg.lr), lr_note=self.lr_note,
            notes=built.notes, warnings=built.warnings)

    # -- what a task decides (classification here; `train.segment` overrides these) -----
    row_type: type = EpochRow

    def _prepare(self, workers: int) -> Prepared:
        """Find the data, build the model, decode the images once (when they fit)."""
        cfg = self.cfg
        splits = data_mod.load_splits(data=cfg.data, dataset=cfg.dataset, root=cfg.root,
                                      val_split=cfg.val_split, seed=cfg.seed)
        if cfg.img_size is None and splits.default_img_size:
            cfg.img_size = splits.default_img_size
        self.classes = splits.classes
        self._check_resumed_classes()
        built = build_model(model=cfg.model, class_names=self.classes,
                            pretrained=cfg.pretrained and self.state is None,
                            weights=cfg.weights if self.state is None else None,
                            img_size=cfg.img_size, seed=cfg.seed, freeze=cfg.freeze)
        meta = ModelMeta.from_dict(self.state["meta"]) if self.state is not None else built.meta
        ctx = self.ctx
        # Each rank decodes and keeps only its share of the data (1/N of the memory).
        train_share = data_mod.rank_share(splits.train, ctx.rank, ctx.world_size)
        val_share = data_mod.rank_share(splits.val, ctx.rank, ctx.world_size)
        n_all = len(train_share) + len(val_share)
        cache = cfg.cache if cfg.cache is not None else data_mod.cache_fits(n_all, meta)
        if cfg.augment:
            from toolbox.augment import build_augmenter

            # Built once here only to fail fast on a bad spec; the workers build their own.
            build_augmenter(cfg.augment, seed=cfg.seed)
        train = data_mod.PreparedImages(
            train_share, meta, cache=cache, workers=workers, progress=self.progress,
            label="training images")
        val = data_mod.PreparedImages(
            val_share, meta, cache=cache, workers=workers, progress=self.progress,
            label="validation images")
        built.notes.extend(_not_images_note(splits.not_images))
        return Prepared(built, train, val, splits.description, cache, len(splits.train))

    def _check_resumed_classes(self) -> None:
        if self.state is not None and list(self.state["class_names"]) != self.classes:
            raise ToolboxError(f"the checkpoint was trained on other classes "
                               f"({len(self.state['class_names'])}) than the data now has "
                               f"({len(self.classes)})", "resume with the same data")

    def _loss(self) -> nn.Module:
        return build_loss(self.cfg.loss, label_smoothing=self.cfg.label_smoothing,
                          focal_gamma=self.cfg.focal_gamma)

    def _augmented_dataset(self) -> Any:
        """The training loader's dataset under `--augment` (None: the loader's own)."""
        return None

    def _meter(self) -> Any:
        return Meter(len(self.classes), self.device)

    def _row(self, epoch: int, train: Any, val: Any, **common: Any) -> EpochRow:
        """The epoch's row from its reduced meters (`common`: lr, speed, time, frozen)."""
        return EpochRow(epoch=epoch, train_loss=train.loss, train_acc1=train.acc1,
                        val_loss=val.loss, val_acc1=val.acc1, val_acc5=val.acck,
                        per_class=val.per_class, **common)

    def _csv_columns(self) -> tuple[str, ...]:
        return CSV_COLUMNS

    def _csv_row(self, row: Any) -> dict[str, Any]:
        return _row_dict(row)

    def _score(self, row: Any) -> float:
        """The figure that picks the best epoch (higher is better)."""
        return row.val_acc1

    def _log_scalars(self, row: Any) -> list[tuple[str, float]]:
        return [("loss/train", row.train_loss), ("loss/val", row.val_loss),
                ("acc1/train", row.train_acc1), ("acc1/val", row.val_acc1),
                ("acc5/val", row.val_acc5), ("throughput/images_per_s", row.images_per_s)]

    def _log_val_images(self, writer: Any, epoch: int) -> None:
        """Pictures of the validation results each epoch (none for classification)."""

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler"):
            self.schedule.load_state_dict(state["scheduler"])
        if self.amp.scaler is not None and state.get("scaler"):
            self.amp.scaler.load_state_dict(state["scaler"])
        if isinstance(state.get("rng"), torch.Tensor):
            torch.set_rng_state(state["rng"])
        if self.device.type == "cuda" and isinstance(state.get("cuda_rng"), torch.Tensor):
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.epoch = int(state["epoch"])
        self.history = [self.row_type(**row) for row in state.get("history", [])]
        self.best_acc1 = float(state.get("best_acc1", -1.0))
        self.best_epoch = int(state.get("best_epoch", 0))

    def _wrap(self) -> None:
        """DDP (rebuilt when the set of trainable parameters changes) and torch.compile."""
        net: nn.Module = self.model
        self.ddp = None
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = self.ddp = DDP(self.model, device_ids=ids)
        if self.cfg.compile:
            net = torch.compile(net)
        self.net = net

    # -- outputs --------------------------------------------------------------------------
    def _checkpoint(self, interrupted: bool = False) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.amp.scaler.state_dict() if self.amp.scaler is not None else {},
            "epoch": self.epoch, "class_names": list(self.classes),
            "args": self.cfg.to_dict(), "meta": self.meta.to_dict(),
            "history": [_row_dict(r) for r in self.history],
            "best_acc1": self.best_acc1, "best_epoch": self.best_epoch,
            "rng": torch.get_rng_state(), "interrupted": interrupted,
            "cuda_rng": (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                         else None),
        }

    def _save_model_file(self) -> None:
        contiguous = self.cfg.channels_last
        if contiguous:  # safetensors stores contiguous tensors only
            self.model.to(memory_format=torch.contiguous_format)
        try:
            save_safetensors(self.model, self.run_dir / runs.MODEL_FILE, self.meta)
        finally:
            if contiguous:
                self.model.to(memory_format=torch.channels_last)

    def _log_start(self, writer: Any) -> None:
        if writer is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                example = torch.zeros((1, *self.meta.input_size), device=self.device)
                self.model.eval()
                writer.add_graph(self.model, example)
            except Exception as exc:  # tracing fails for some architectures; not fatal
                self.progress.note(f"model graph not logged: {type(exc).__name__}")

    def _log_grid(self, writer: Any, batch: torch.Tensor, epoch: int) -> None:
        from toolbox.tensorboard import add_image, image_grid

        images = [img.permute(1, 2, 0).numpy() for img in batch[:GRID_IMAGES].cpu()]
        if images and images[0].shape[2] == 1:
            images = [img.repeat(3, axis=2) for img in images]
        add_image(writer, "train/images", image_grid(images, nrow=8), epoch)

    def _log_epoch(self, writer: Any, row: EpochRow, lrs: dict[str, float]) -> None:
        if writer is None:
            return
        for tag, value in self._log_scalars(row):
            writer.add_scalar(tag, value, row.epoch)
        for name, lr in lrs.items():
            writer.add_scalar(f"lr/{name}", lr, row.epoch)
        writer.flush()

    def _log_hparams(self, writer: Any) -> None:
        if writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        keys = ("model", "pretrained", "freeze", "epochs", "batch_size", "lr", "weight_decay",
                "opt", "sched", "loss", "amp", "img_size", "augment", "seed")
        hp = {k: (v if isinstance(v, int | float | str | bool) else str(v))
              for k, v in self.cfg.to_dict().items() if k in keys}
        metrics = {"hparam/best_val_acc1": self.best_acc1}
        # Written into this run's own event file (add_hparams would make a sub-folder).
        for summary in hparams(hp, metrics):
            writer.file_writer.add_summary(summary)
        writer.add_scalar("hparam/best_val_acc1", self.best_acc1, self.epoch)
        writer.flush()

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> FinetuneResult:
        start = self._setup()
        cfg, ctx = self.cfg, self.ctx
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            import yaml

            # The options, then what they resolved to (`--resume` reads only the options).
            atomic_write_text(self.run_dir / runs.ARGS_FILE, yaml.safe_dump(
                {**cfg.to_dict(), "resolved": start.settings()}, sort_keys=False))
            if self.on_start is not None:
                self.on_start(start)
        if self.on_start is None:  # otherwise the caller shows them with the start table
            for message in [*start.warnings, *start.notes]:
                self.progress.note(message)
        from toolbox.tensorboard import summary_writer

        writer_cm = (summary_writer(self.run_dir) if ctx.is_main
                     else contextlib.nullcontext(None))
        with writer_cm as writer:
            if self.epoch == 0:
                self._log_start(writer)
            try:
                while self.epoch < cfg.epochs:
                    self._one_epoch(writer)
            except KeyboardInterrupt:
                if ctx.is_main:
                    save_checkpoint(runs.checkpoint_path(self.run_dir, runs.LAST_CHECKPOINT),
                                    self._checkpoint(interrupted=True))
                    self.progress.note(
                        f"interrupted: saved {runs.checkpoint_path(self.run_dir)} after epoch "
                        f"{self.epoch}; continue with: tb finetune --resume {self.run_dir}")
                raise
            except NonFiniteLoss as exc:
                last = runs.checkpoint_path(self.run_dir)
                kept = (f"the last good checkpoint is {last} (epoch {self.epoch})"
                        if self.epoch else "no epoch finished, so no checkpoint was written")
                raise NonFiniteLoss(f"{exc.message}; training stopped, {kept}",
                                    "lower --lr, add --clip-grad, or try --amp-dtype bf16"
                                    ) from None
            self._log_hparams(writer)
        result = self._result()
        result.start = start
        return result

    def _one_epoch(self, writer: Any) -> None:
        cfg, ctx = self.cfg, self.ctx
        epoch = self.epoch + 1
        frozen = _frozen_at(cfg, epoch)
        backbone_learns = any(p.requires_grad for n, p in self.model.named_parameters()
                              if not is_head(n, self.head))
        if backbone_learns == frozen:  # --unfreeze-at reached
            set_frozen(self.model, self.head, frozen)
            self.progress.note(f"epoch {epoch}: backbone unfrozen (lr x{cfg.backbone_lr_scale:g})")
            self._wrap()
        train_mode(self.model, self.head)
        meter = self._meter()
        grid = None
        if writer is not None and epoch == 1:
            grid = lambda batch: self._log_grid(writer, batch, epoch)  # noqa: E731
        lrs = current_lrs(self.optimizer)
        t0 = time.perf_counter()
        stats = train_epoch(
            self.net, self.loader.batches(epoch), epoch=epoch,
            num_batches=self.loader.num_batches(epoch), optimizer=self.optimizer,
            schedule=self.schedule, loss_fn=self.loss_fn, amp=self.amp, meta=self.meta,
            device=self.device, meter=meter, grad_accum=cfg.grad_accum, clip_grad=cfg.clip_grad,
            channels_last=cfg.channels_last, progress=self.progress,
            label=f"epoch {epoch}/{cfg.epochs}", on_first_batch=grid,
            no_sync=self.ddp.no_sync if self.ddp is not None else None,
            all_finite=ctx.all_finite if ctx.enabled else None)
        train = meter.reduce(ctx)
        throughput = ctx.all_reduce_sum([stats.images, stats.seconds])
        val_meter = self._meter()
        ctx.sync_buffers(self.model)  # every rank validates the model rank 0 saves
        validate(self.model, self.val_loader, loss_fn=self.loss_fn, meta=self.meta,
                 device=self.device, meter=val_meter, channels_last=cfg.channels_last)
        val = val_meter.reduce(ctx)
        self.schedule.step_epoch(epoch, val.loss)
        seconds = float(throughput[1]) / ctx.world_size
        row = self._row(epoch, train, val, lr=lrs.get("head", next(iter(lrs.values()))),
                        images_per_s=float(throughput[0]) / max(seconds, 1e-9),
                        epoch_time_s=time.perf_counter() - t0, frozen=frozen)
        if not (math.isfinite(row.val_loss) and math.isfinite(row.train_loss)):
            raise NonFiniteLoss(f"the validation loss became {row.val_loss} at epoch {epoch}")
        self.history.append(row)
        self.epoch = epoch
        score = self._score(row)
        improved = score > self.best_acc1  # best_acc1: the best score (mIoU when segmenting)
        if improved:
            self.best_acc1, self.best_epoch = score, epoch
        if ctx.is_main:
            state = self._checkpoint()
            save_checkpoint(runs.checkpoint_path(self.run_dir, runs.LAST_CHECKPOINT), state)
            if improved:
                save_checkpoint(runs.checkpoint_path(self.run_dir, runs.BEST_CHECKPOINT), state)
                self._save_model_file()
            write_metrics_csv(self.run_dir / runs.METRICS_FILE,
                              [self._csv_row(r) for r in self.history], self._csv_columns())
            self._log_epoch(writer, row, lrs)
            self._log_val_images(writer, epoch)
            if self.on_epoch is not None:
                self.on_epoch(row)
        ctx.barrier()

    def _result(self) -> FinetuneResult:
        best = next((r for r in self.history if r.epoch == self.best_epoch), self.history[-1])
        per_class = dict(zip(self.classes, best.per_class, strict=False))
        return FinetuneResult(
            run_dir=self.run_dir, model_file=self.run_dir / runs.MODEL_FILE,
            epochs=list(self.history), best_epoch=self.best_epoch,
            best_val_acc1=self.best_acc1, final_val_acc1=self._score(self.history[-1]),
            per_class_acc=per_class, class_names=list(self.classes),
            tensorboard_command=tensorboard_command(self.run_dir), lr=float(self.cfg.lr),
            resumed_from=self.resumed_from)
