"""The trainer of one fine-tuning run: its set-up and task hooks (the epoch loop is
`epoch.run_epochs`, checkpoints `checkpoint.CheckpointSaver`, TensorBoard `run_log.RunLog`)."""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolbox import runs
from toolbox.devices import default_workers
from toolbox.losses import build_loss
from toolbox.models import ModelMeta
from toolbox.progress import NullProgress, Progress
from toolbox.train import data as data_mod
from toolbox.train.checkpoint import CheckpointSaver, TrainState, row_dict
from toolbox.train.config import FinetuneConfig
from toolbox.train.distributed import DistContext
from toolbox.train.ema import WeightEma, ema_columns
from toolbox.train.engine import amp_setup
from toolbox.train.epoch import frozen_at, run_epochs
from toolbox.train.feature_data import feature_data_for
from toolbox.train.features import HeadNet
from toolbox.train.metrics import CSV_COLUMNS, Meter, write_metrics_csv
from toolbox.train.mixing import batch_mixer, soft_target_loss
from toolbox.train.modeling import TrainableModel, set_frozen
from toolbox.train.optim import LrSchedule, build_optimizer
from toolbox.train.results import EpochRow, FinetuneResult, RunStart
from toolbox.train.resume import ResumePlan, backbone_scale, replan_for
from toolbox.train.run_log import RunLog, open_run_log
from toolbox.train.shard_data import shard_run_data
from toolbox.train.splits import splits_for
from toolbox.train.start import model_for_run, run_start, write_args
from toolbox.train.stopping import write_result


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """What is built by now (torch, timm, the model, the data index) lasts the whole run:
    frozen, the garbage collector no longer walks it, in this process or in the loader workers
    forked next, whose collections would otherwise copy every page those objects sit on.
    Unfrozen after, so a caller running many trainings still collects their garbage."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class Trainer:
    """One run between epochs: its state (a `TrainState`, what checkpoints capture) and loop."""

    def __init__(self, cfg: FinetuneConfig, ctx: DistContext, device: torch.device,
                 run_dir: Path, saved: dict[str, Any] | None, resumed_from: Path | None,
                 progress: Progress, on_start: Callable | None, on_epoch: Callable | None,
                 lr_note: str | None = None, plan: ResumePlan | None = None,
                 checkpoints: bool = True) -> None:
        self.cfg, self.ctx, self.device, self.run_dir = cfg, ctx, device, run_dir
        # lr_note: why cfg.lr, when the mode chose it
        self.saved, self.resumed_from, self.lr_note = saved, resumed_from, lr_note
        self.plan = plan  # what --resume changed, if anything
        self.progress = progress if ctx.is_main else NullProgress()
        self.on_start, self.on_epoch = on_start, on_epoch
        self.saver = CheckpointSaver(run_dir, cfg.channels_last, checkpoints)
        self.head_net: nn.Module | None = None  # set when the head trains on cached features
        self.stop_requested: str | None = None  # why on_epoch ended the run (`StopRun`)

    # -- what a task decides (classification here; `train.segment` overrides these) -----
    row_type: type = EpochRow

    def _prepare(self) -> tuple[Any, TrainableModel, ModelMeta, Any]:
        """(splits, model, meta, run data): the data found, the model built, the images
        decoded (or ready to be) with the loaders over them."""
        cfg, ctx = self.cfg, self.ctx
        splits = splits_for(cfg)
        if cfg.img_size is None and splits.default_img_size:
            cfg.img_size = splits.default_img_size
        built, meta = model_for_run(cfg, splits.classes, self.saved, self.resumed_from,
                                    self.device)
        workers = cfg.workers if cfg.workers is not None else default_workers(cap=8)
        if splits.streamed:  # tar shards: read in order, never indexed or cached
            return splits, built, meta, shard_run_data(
                splits, meta, batch_size=cfg.batch_size, seed=cfg.seed, workers=workers,
                augment=cfg.augment, buffer=cfg.shuffle_buffer, cache=cfg.cache,
                sampler=cfg.sampler, rank=ctx.rank, world_size=ctx.world_size,
                pin_memory=self.device.type == "cuda", progress=self.progress)
        data, line, warnings = feature_data_for(cfg, ctx, self.device, self.amp, self.progress,
                                                splits, built, meta)
        built.warnings.extend(warnings)
        if data is not None:  # the head trains on the body's features, computed once
            self.head_net = HeadNet(built.model, built.head)
            return splits, built, meta, data
        data = data_mod.prepare_run_data(
            splits, meta, batch_size=cfg.batch_size, seed=cfg.seed, cache=cfg.cache,
            workers=workers, augment=cfg.augment, rank=ctx.rank, world_size=ctx.world_size,
            pin_memory=self.device.type == "cuda", progress=self.progress, sampler=cfg.sampler)
        data.features = line
        return splits, built, meta, data

    def _loss(self) -> nn.Module:
        return build_loss(self.cfg.loss, label_smoothing=self.cfg.label_smoothing,
                          focal_gamma=self.cfg.focal_gamma,
                          class_weights=self.data.class_weights(self.cfg.class_weights))

    def _meter(self) -> Any:
        return Meter(len(self.state.classes), self.device)

    def _row(self, epoch: int, train: Any, val: Any, **common: Any) -> EpochRow:
        """The epoch's row from its reduced meters (`common`: lr, speed, time, frozen)."""
        return EpochRow(epoch=epoch, train_loss=train.loss, train_acc1=train.acc1,
                        val_loss=val.loss, val_acc1=val.acc1, val_acc5=val.acck,
                        per_class=val.per_class, **common)

    def _write_metrics(self) -> None:
        columns = CSV_COLUMNS + (ema_columns(EpochRow) if self.cfg.ema else ())
        write_metrics_csv(self.run_dir / runs.METRICS_FILE,
                          [row_dict(r) for r in self.state.history], columns)

    def _log_epoch(self, log: RunLog, row: Any, lrs: dict[str, float]) -> None:
        log.epoch(row, lrs)

    def _result(self, start: RunStart) -> FinetuneResult:
        state = self.state
        return FinetuneResult.of(self.run_dir, state.history, state.best_epoch, state.best_acc1,
                                 state.classes, float(self.cfg.lr), self.resumed_from, start)

    # -- set-up and the loop ----------------------------------------------------------
    def _setup(self) -> RunStart:
        cfg, saved = self.cfg, self.saved
        # Known before the data: cached training features are computed at this precision.
        self.amp = amp_setup(self.device, cfg.amp, cfg.amp_dtype)
        splits, built, meta, self.data = self._prepare()
        self.model, self.head = built.model, built.head
        self.loss_fn = self._loss().to(self.device)
        self.mixer = batch_mixer(cfg, len(splits.classes))  # --mixup/--cutmix: soft targets
        self.train_loss_fn = (soft_target_loss().to(self.device) if self.mixer is not None
                              else self.loss_fn)
        optimizer = build_optimizer(
            self.model, self.head, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            backbone_lr_scale=backbone_scale(cfg), layer_decay=cfg.layer_decay)
        steps = math.ceil(self.data.loader.num_batches() / cfg.grad_accum)
        self.state = TrainState(self.model, optimizer, LrSchedule(optimizer, cfg, steps),
                                self.amp.scaler, self.device, cfg, meta, splits.classes,
                                row_type=self.row_type,
                                ema=WeightEma(self.model, cfg.ema_decay) if cfg.ema else None)
        torch.manual_seed(cfg.seed + 1)  # dropout and friends, independent of the model init
        if saved is not None:
            self.state.restore(saved)
            if self.plan is not None and self.plan.replan:
                self.state.schedule = replan_for(self.state, self.head, steps)
        set_frozen(self.model, self.head, frozen_at(cfg, self.state.epoch + 1))
        self.wrap()
        weights = (built.weights_source if saved is None else f"checkpoint {self.resumed_from}")
        changes = self.plan.changes if self.plan is not None else []
        return run_start(self, splits, weights, [*built.notes, *changes], built.warnings)

    def wrap(self) -> None:
        """DDP (rebuilt when the set of trainable parameters changes) and torch.compile."""
        net: nn.Module = self.head_net if self.head_net is not None else self.model
        self.ddp = None
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = self.ddp = DDP(net, device_ids=ids)
        self.net = torch.compile(net) if self.cfg.compile else net

    def eval_net(self, model: nn.Module) -> nn.Module:
        """What validates `model` (the raw or the EMA weights): the model, or its head when
        the data are cached features."""
        return HeadNet(model, self.head) if self.head_net is not None else model

    def _log_start(self, log: RunLog) -> None:
        """The model graph; on cached features, the images a feature pass decoded instead.

        No graph on features: tracing runs the whole model (a backbone forward a warm run
        must not do), and the head's own graph, one Linear layer, costs 0.6 s to trace."""
        if self.head_net is None:
            log.graph(self.model, tuple(self.state.meta.input_size), self.device)
        elif log.writer is not None and self.data.train.grid is not None:
            log.grid(self.data.train.grid, 1)

    def run(self) -> FinetuneResult:
        start = self._setup()
        cfg, ctx, state = self.cfg, self.ctx, self.state
        if ctx.is_main:
            write_args(self.run_dir, cfg, start)
            if self.on_start is not None:
                self.on_start(start)
        if self.on_start is None:  # otherwise the caller shows them with the start table
            for message in [*start.warnings, *start.notes]:
                self.progress.note(message)
        with open_run_log(self.run_dir, ctx.is_main, self.progress) as log, frozen_heap():
            # The loader workers start decoding the first batches while the graph is traced.
            first = (self.data.start_epoch(state.epoch + 1) if state.epoch < cfg.epochs
                     else None)
            if state.epoch == 0:
                self._log_start(log)
            stop = run_epochs(self, log, first)
            log.hparams(cfg, state.best_acc1, state.epoch)
        reason = stop or f"trained all {cfg.epochs} epochs"
        if ctx.is_main:
            write_result(self.run_dir, "finished" if stop is None else "stopped early", reason,
                         state)
        result = self._result(start)
        result.stop_reason, result.best_weights = reason, state.best_weights
        return result
