"""The trainer of one fine-tuning run: set-up, then the epoch loop (checkpoints are written by
`checkpoint.CheckpointSaver`, TensorBoard by `run_log.RunLog`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolbox import runs
from toolbox.devices import default_workers
from toolbox.fileio import atomic_write_text
from toolbox.losses import build_loss
from toolbox.models import ModelMeta
from toolbox.progress import NullProgress, Progress
from toolbox.train import data as data_mod
from toolbox.train.checkpoint import (
    CheckpointSaver,
    TrainState,
    check_classes,
    load_model_state,
    row_dict,
)
from toolbox.train.config import FinetuneConfig
from toolbox.train.distributed import DistContext
from toolbox.train.engine import NonFiniteLoss, amp_setup, train_epoch, validate
from toolbox.train.metrics import Meter, topk_for, write_metrics_csv
from toolbox.train.modeling import (
    TrainableModel,
    build_model,
    is_head,
    parameter_counts,
    set_frozen,
    train_mode,
)
from toolbox.train.optim import LrSchedule, build_optimizer, current_lrs
from toolbox.train.results import EpochRow, FinetuneResult, RunStart
from toolbox.train.resume import ResumePlan, backbone_scale, replan_for
from toolbox.train.run_log import RunLog, open_run_log
from toolbox.train.stopping import early_stop_reason, write_result


def _not_images_note(skipped: list[Any]) -> list[str]:
    if not skipped:
        return []
    shown = ", ".join(f"{s.path} ({s.reason})" for s in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return [f"left out {len(skipped)} file(s) that are not images: {shown}{more}"]


def _frozen_at(cfg: FinetuneConfig, epoch: int) -> bool:
    return cfg.freeze and (cfg.unfreeze_at is None or epoch < cfg.unfreeze_at)


def _model_for_run(cfg: FinetuneConfig, classes: list[str], saved: dict[str, Any] | None,
                   resumed_from: Path | None, device: torch.device
                   ) -> tuple[TrainableModel, ModelMeta]:
    """The model with its new head (or a checkpoint's weights) on `device`, and its meta."""
    if saved is not None:
        check_classes(saved, classes)
    built = build_model(model=cfg.model, class_names=classes,
                        pretrained=cfg.pretrained and saved is None,
                        weights=cfg.weights if saved is None else None,
                        img_size=cfg.img_size, seed=cfg.seed, freeze=cfg.freeze)
    meta = ModelMeta.from_dict(saved["meta"]) if saved is not None else built.meta
    if saved is not None:
        load_model_state(built.model, saved, resumed_from, cfg.model)
    built.model.to(device)
    if cfg.channels_last:
        built.model.to(memory_format=torch.channels_last)
    return built, meta


def _run_start(trainer: Trainer, splits: data_mod.DataSplits, weights: str, notes: list[str],
               warnings: list[str]) -> RunStart:
    """The start table of `trainer`, set up."""
    state, data = trainer.state, trainer.data
    total, trainable, frozen = parameter_counts(trainer.model)
    train_images, val_images, unreadable, skipped = data.counts(trainer.ctx)
    return RunStart(
        run_dir=trainer.run_dir, data=splits.description, train_images=train_images,
        val_images=val_images, skipped=unreadable + len(splits.not_images),
        classes=splits.classes, model=state.meta.model,
        weights=weights, input_size=tuple(state.meta.input_size), total_params=total,
        trainable_params=trainable, frozen_params=frozen, device=str(trainer.device),
        amp=trainer.amp.label, world_size=trainer.ctx.world_size, epochs=trainer.cfg.epochs,
        start_epoch=state.epoch + 1, cached=data.cached, topk=topk_for(len(splits.classes)),
        lr=float(trainer.cfg.lr), lr_note=trainer.lr_note,
        notes=[*notes, *_not_images_note(splits.not_images)], warnings=[*warnings, *skipped])


def _write_args(run_dir: Path, cfg: FinetuneConfig, start: RunStart) -> None:
    """The run's settings beside its outputs (`args.yaml`, as timm writes it): the options,
    then what they resolved to (`--resume` reads only the options)."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / runs.ARGS_FILE, yaml.safe_dump(
        {**cfg.to_dict(), "resolved": start.settings()}, sort_keys=False))


class Trainer:
    """One run between epochs: its state (a `TrainState`, what checkpoints capture) and loop."""

    def __init__(self, cfg: FinetuneConfig, ctx: DistContext, device: torch.device,
                 run_dir: Path, saved: dict[str, Any] | None, resumed_from: Path | None,
                 progress: Progress, on_start: Callable | None, on_epoch: Callable | None,
                 lr_note: str | None = None, plan: ResumePlan | None = None) -> None:
        self.cfg, self.ctx, self.device, self.run_dir = cfg, ctx, device, run_dir
        # lr_note: why cfg.lr, when the mode chose it
        self.saved, self.resumed_from, self.lr_note = saved, resumed_from, lr_note
        self.plan = plan  # what --resume changed, if anything
        self.progress = progress if ctx.is_main else NullProgress()
        self.on_start, self.on_epoch = on_start, on_epoch
        self.saver = CheckpointSaver(run_dir, cfg.channels_last)

    # -- what a task decides (classification here; `train.segment` overrides these) -----
    row_type: type = EpochRow

    def _prepare(self) -> tuple[Any, TrainableModel, ModelMeta, Any]:
        """(splits, model, meta, run data): the data found, the model built, the images
        decoded (or ready to be) with the loaders over them."""
        cfg, ctx = self.cfg, self.ctx
        splits = data_mod.load_splits(data=cfg.data, dataset=cfg.dataset, root=cfg.root,
                                      val_split=cfg.val_split, seed=cfg.seed)
        if cfg.img_size is None and splits.default_img_size:
            cfg.img_size = splits.default_img_size
        built, meta = _model_for_run(cfg, splits.classes, self.saved, self.resumed_from,
                                     self.device)
        data = data_mod.prepare_run_data(
            splits, meta, batch_size=cfg.batch_size, seed=cfg.seed, cache=cfg.cache,
            workers=cfg.workers if cfg.workers is not None else default_workers(cap=8),
            augment=cfg.augment, rank=ctx.rank, world_size=ctx.world_size,
            pin_memory=self.device.type == "cuda", progress=self.progress)
        return splits, built, meta, data

    def _loss(self) -> nn.Module:
        return build_loss(self.cfg.loss, label_smoothing=self.cfg.label_smoothing,
                          focal_gamma=self.cfg.focal_gamma)

    def _meter(self) -> Any:
        return Meter(len(self.state.classes), self.device)

    def _row(self, epoch: int, train: Any, val: Any, **common: Any) -> EpochRow:
        """The epoch's row from its reduced meters (`common`: lr, speed, time, frozen)."""
        return EpochRow(epoch=epoch, train_loss=train.loss, train_acc1=train.acc1,
                        val_loss=val.loss, val_acc1=val.acc1, val_acc5=val.acck,
                        per_class=val.per_class, **common)

    def _score(self, row: Any) -> float:
        """The figure that picks the best epoch (higher is better)."""
        return row.val_acc1

    def _write_metrics(self) -> None:
        write_metrics_csv(self.run_dir / runs.METRICS_FILE,
                          [row_dict(r) for r in self.state.history])

    def _log_epoch(self, log: RunLog, row: Any, lrs: dict[str, float]) -> None:
        log.epoch(row, lrs)

    def _result(self, start: RunStart) -> FinetuneResult:
        state = self.state
        return FinetuneResult.of(self.run_dir, state.history, state.best_epoch, state.best_acc1,
                                 state.classes, float(self.cfg.lr), self.resumed_from, start)

    # -- set-up and the loop ----------------------------------------------------------
    def _setup(self) -> RunStart:
        cfg, saved = self.cfg, self.saved
        splits, built, meta, self.data = self._prepare()
        self.model, self.head = built.model, built.head
        self.loss_fn = self._loss().to(self.device)
        self.amp = amp_setup(self.device, cfg.amp, cfg.amp_dtype)
        optimizer = build_optimizer(
            self.model, self.head, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            backbone_lr_scale=backbone_scale(cfg), layer_decay=cfg.layer_decay)
        steps = math.ceil(self.data.loader.num_batches() / cfg.grad_accum)
        self.state = TrainState(self.model, optimizer, LrSchedule(optimizer, cfg, steps),
                                self.amp.scaler, self.device, cfg, meta, splits.classes,
                                row_type=self.row_type)
        torch.manual_seed(cfg.seed + 1)  # dropout and friends, independent of the model init
        if saved is not None:
            self.state.restore(saved)
            if self.plan is not None and self.plan.replan:
                self.state.schedule = replan_for(self.state, self.head, steps)
        set_frozen(self.model, self.head, _frozen_at(cfg, self.state.epoch + 1))
        self._wrap()
        weights = (built.weights_source if saved is None else f"checkpoint {self.resumed_from}")
        changes = self.plan.changes if self.plan is not None else []
        return _run_start(self, splits, weights, [*built.notes, *changes], built.warnings)

    def _wrap(self) -> None:
        """DDP (rebuilt when the set of trainable parameters changes) and torch.compile."""
        net: nn.Module = self.model
        self.ddp = None
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = self.ddp = DDP(self.model, device_ids=ids)
        self.net = torch.compile(net) if self.cfg.compile else net

    def run(self) -> FinetuneResult:
        start = self._setup()
        cfg, ctx, state = self.cfg, self.ctx, self.state
        if ctx.is_main:
            _write_args(self.run_dir, cfg, start)
            if self.on_start is not None:
                self.on_start(start)
        if self.on_start is None:  # otherwise the caller shows them with the start table
            for message in [*start.warnings, *start.notes]:
                self.progress.note(message)
        with open_run_log(self.run_dir, ctx.is_main, self.progress) as log:
            # The loader workers start decoding the first batches while the graph is traced.
            first = (self.data.loader.batches(state.epoch + 1) if state.epoch < cfg.epochs
                     else None)
            if state.epoch == 0:
                log.graph(self.model, tuple(state.meta.input_size), self.device)
            stop = self._early_stop()
            try:
                while state.epoch < cfg.epochs and stop is None:
                    self._one_epoch(log, first)
                    first, stop = None, self._early_stop()
            except KeyboardInterrupt:
                if ctx.is_main:
                    self.saver.save_interrupted(state)
                    write_result(self.run_dir, "interrupted",
                                 f"interrupted after epoch {state.epoch}", state)
                    self.progress.note(
                        f"interrupted: saved {runs.checkpoint_path(self.run_dir)} after epoch "
                        f"{state.epoch}; continue with: tb finetune --resume {self.run_dir}")
                raise
            except NonFiniteLoss as exc:
                last = runs.checkpoint_path(self.run_dir)
                kept = (f"the last good checkpoint is {last} (epoch {state.epoch})"
                        if state.epoch else "no epoch finished, so no checkpoint was written")
                raise NonFiniteLoss(f"{exc.message}; training stopped, {kept}",
                                    "lower --lr, add --clip-grad, or try --amp-dtype bf16"
                                    ) from None
            log.hparams(cfg, state.best_acc1, state.epoch)
        reason = stop or f"trained all {cfg.epochs} epochs"
        if ctx.is_main:
            write_result(self.run_dir, "finished" if stop is None else "stopped early", reason,
                         state)
        result = self._result(start)
        result.stop_reason = reason
        return result

    def _early_stop(self) -> str | None:
        """Why `--patience` ends the run now, or None."""
        return early_stop_reason([self._score(r) for r in self.state.history],
                                 self.cfg.patience, self.cfg.min_delta)

    def _one_epoch(self, log: RunLog, batches: Any = None) -> None:
        cfg, ctx, state, data = self.cfg, self.ctx, self.state, self.data
        epoch = state.epoch + 1
        frozen = _frozen_at(cfg, epoch)
        backbone_learns = any(p.requires_grad for n, p in self.model.named_parameters()
                              if not is_head(n, self.head))
        if backbone_learns == frozen:  # --unfreeze-at reached
            set_frozen(self.model, self.head, frozen)
            self.progress.note(f"epoch {epoch}: backbone unfrozen (lr x{cfg.backbone_lr_scale:g})")
            self._wrap()
        train_mode(self.model, self.head)
        meter = self._meter()
        grid = ((lambda batch: log.grid(batch, epoch)) if log.writer is not None and epoch == 1
                else None)
        lrs = current_lrs(state.optimizer)
        t0 = time.perf_counter()
        stats = train_epoch(
            self.net, batches or data.loader.batches(epoch), epoch=epoch,
            num_batches=data.loader.num_batches(epoch), optimizer=state.optimizer,
            schedule=state.schedule, loss_fn=self.loss_fn, amp=self.amp, meta=state.meta,
            device=self.device, meter=meter, grad_accum=cfg.grad_accum, clip_grad=cfg.clip_grad,
            channels_last=cfg.channels_last, progress=self.progress,
            label=f"epoch {epoch}/{cfg.epochs}", on_first_batch=grid,
            no_sync=self.ddp.no_sync if self.ddp is not None else None,
            all_finite=ctx.all_finite if ctx.enabled else None)
        train = meter.reduce(ctx)
        throughput = ctx.all_reduce_sum([stats.images, stats.seconds])
        val_meter = self._meter()
        ctx.sync_buffers(self.model)  # every rank validates the model rank 0 saves
        validate(self.model, data.val_loader, loss_fn=self.loss_fn, meta=state.meta,
                 device=self.device, meter=val_meter, channels_last=cfg.channels_last)
        val = val_meter.reduce(ctx)
        state.schedule.step_epoch(epoch, val.loss)
        seconds = float(throughput[1]) / ctx.world_size
        row = self._row(epoch, train, val, lr=lrs.get("head", next(iter(lrs.values()))),
                        images_per_s=float(throughput[0]) / max(seconds, 1e-9),
                        epoch_time_s=time.perf_counter() - t0, frozen=frozen)
        if not (math.isfinite(val.loss) and math.isfinite(train.loss)):
            raise NonFiniteLoss(f"the validation loss became {val.loss} at epoch {epoch}")
        state.history.append(row)
        state.epoch = epoch
        improved = self._score(row) > state.best_acc1
        if improved:
            state.best_acc1, state.best_epoch = self._score(row), epoch
        if ctx.is_main:
            self.saver.save_epoch(state, improved)
            self._write_metrics()
            self._log_epoch(log, row, lrs)
            if self.on_epoch is not None:
                self.on_epoch(row)
        ctx.barrier()
