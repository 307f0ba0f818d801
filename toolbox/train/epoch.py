"""The epoch loop of a fine-tuning run: train an epoch (unfreezing when due, updating the weight
EMA after each optimizer step), validate the raw and the EMA weights, record the row and keep
the better weights when the epoch improved; stop on `--patience`, Ctrl-C or a non-finite loss.
Mixing (`--mixup`, `--cutmix`) happens in the training pass only.

The functions take the `Trainer` (not imported here: it imports this module) and call its task
hooks (`_meter`, `_row`, `_write_metrics`, `_log_epoch`), which segmentation overrides."""

from __future__ import annotations

import math
import time
from typing import Any

from toolbox import interrupt, runs
from toolbox.train.config import FinetuneConfig
from toolbox.train.ema import best_of, with_ema
from toolbox.train.engine import NonFiniteLoss, train_epoch, validate
from toolbox.train.metrics import MeterResult
from toolbox.train.modeling import is_head, set_frozen, train_mode
from toolbox.train.optim import current_lrs
from toolbox.train.stopping import StopRun, early_stop_reason, write_result


def frozen_at(cfg: FinetuneConfig, epoch: int) -> bool:
    """Whether the backbone is frozen in `epoch` (`--freeze`, until `--unfreeze-at`)."""
    return cfg.freeze and (cfg.unfreeze_at is None or epoch < cfg.unfreeze_at)


def early_stop(trainer: Any) -> str | None:
    """Why the run ends now: the `on_epoch` callback asked (`StopRun`), or `--patience`
    (scored as the best epoch is picked); None: it goes on."""
    if trainer.stop_requested:
        return trainer.stop_requested
    return early_stop_reason([best_of(r)[0] for r in trainer.state.history],
                             trainer.cfg.patience, trainer.cfg.min_delta)


def run_epochs(trainer: Any, log: Any, first: Any) -> str | None:
    """Train `trainer`'s remaining epochs (`first`: the first epoch's batches, already being
    loaded, or None); return why `--patience` (or the `on_epoch` callback) stopped it early,
    or None.

    Raises:
        KeyboardInterrupt: after saving `last.pt` and an "interrupted" result.yaml.
        NonFiniteLoss: naming the last good checkpoint.
    """
    state, cfg = trainer.state, trainer.cfg
    stop = early_stop(trainer)
    try:
        while state.epoch < cfg.epochs and stop is None:
            interrupt.check()
            run_epoch(trainer, log, first)
            first, stop = None, early_stop(trainer)
    except KeyboardInterrupt:
        if trainer.ctx.is_main:
            trainer.saver.save_interrupted(state)
            write_result(trainer.run_dir, "interrupted", f"interrupted after epoch {state.epoch}",
                         state)
            trainer.progress.note(
                f"interrupted: saved {runs.checkpoint_path(trainer.run_dir)} after epoch "
                f"{state.epoch}; continue with: tb finetune --resume {trainer.run_dir}")
        raise
    except NonFiniteLoss as exc:
        last = runs.checkpoint_path(trainer.run_dir)
        kept = (f"the last good checkpoint is {last} (epoch {state.epoch})"
                if state.epoch else "no epoch finished, so no checkpoint was written")
        raise NonFiniteLoss(f"{exc.message}; training stopped, {kept}",
                            "lower --lr, add --clip-grad, or try --amp-dtype bf16") from None
    return stop


def run_epoch(trainer: Any, log: Any, batches: Any = None) -> None:
    """Train and validate `trainer`'s next epoch, then record, save and report it.

    Raises:
        NonFiniteLoss: the training or validation loss was NaN or infinite.
    """
    cfg, ctx, state, loader = trainer.cfg, trainer.ctx, trainer.state, trainer.data.loader
    epoch = state.epoch + 1
    frozen = _unfreeze_when_due(trainer, epoch)
    train_mode(trainer.model, trainer.head)
    meter = trainer._meter()
    grid = ((lambda batch: log.grid(batch, epoch))
            if log.writer is not None and epoch == 1 and trainer.head_net is None else None)
    lrs = current_lrs(state.optimizer)
    ema, mixer = state.ema, trainer.mixer
    if mixer is not None:
        mixer.set_epoch(epoch)
    t0 = time.perf_counter()
    stats = train_epoch(
        trainer.net, batches or trainer.data.start_epoch(epoch), epoch=epoch,
        num_batches=loader.num_batches(epoch), optimizer=state.optimizer,
        schedule=state.schedule, loss_fn=trainer.train_loss_fn, amp=trainer.amp,
        meta=state.meta, device=trainer.device, meter=meter, grad_accum=cfg.grad_accum,
        clip_grad=cfg.clip_grad, channels_last=cfg.channels_last, progress=trainer.progress,
        label=f"epoch {epoch}/{cfg.epochs}", on_first_batch=grid,
        no_sync=trainer.ddp.no_sync if trainer.ddp is not None else None,
        all_finite=ctx.all_finite if ctx.enabled else None,
        after_step=(lambda: ema.update(trainer.model)) if ema is not None else None, mix=mixer)
    train = meter.reduce(ctx)
    throughput = ctx.all_reduce_sum([stats.images, stats.seconds])
    val = _validate(trainer, trainer.model)
    ema_val = _validate(trainer, ema.module) if ema is not None else None
    state.schedule.step_epoch(epoch, val.loss)
    seconds = float(throughput[1]) / ctx.world_size
    common = dict(lr=lrs.get("head", next(iter(lrs.values()))),
                  images_per_s=float(throughput[0]) / max(seconds, 1e-9),
                  epoch_time_s=time.perf_counter() - t0, frozen=frozen)
    row = trainer._row(epoch, train, val, **common)
    if ema_val is not None:
        row = with_ema(row, trainer._row(epoch, train, ema_val, **common))
    if not (math.isfinite(val.loss) and math.isfinite(train.loss)):
        raise NonFiniteLoss(f"the validation loss became {val.loss} at epoch {epoch}")
    _record(trainer, row, log, lrs)


def _unfreeze_when_due(trainer: Any, epoch: int) -> bool:
    """Unfreeze the backbone when `--unfreeze-at` is reached; whether it is frozen now."""
    frozen = frozen_at(trainer.cfg, epoch)
    backbone_learns = any(p.requires_grad for n, p in trainer.model.named_parameters()
                          if not is_head(n, trainer.head))
    if backbone_learns == frozen:
        set_frozen(trainer.model, trainer.head, frozen)
        trainer.progress.note(f"epoch {epoch}: backbone unfrozen "
                              f"(lr x{trainer.cfg.backbone_lr_scale:g})")
        trainer.wrap()
    return frozen


def _validate(trainer: Any, model: Any) -> MeterResult:
    """`model` (the raw or the EMA weights) on the validation data, reduced over the ranks."""
    meter = trainer._meter()
    trainer.ctx.sync_buffers(model)  # every rank validates the model rank 0 saves
    validate(trainer.eval_net(model), trainer.data.val_loader, loss_fn=trainer.loss_fn,
             meta=trainer.state.meta, device=trainer.device, meter=meter,
             channels_last=trainer.cfg.channels_last)
    return meter.reduce(trainer.ctx)


def _record(trainer: Any, row: Any, log: Any, lrs: dict[str, float]) -> None:
    """Add `row` to the history; when it improved, keep the better of its weights (raw or EMA)
    as the best; save the checkpoints, metrics.csv and TensorBoard scalars (rank 0)."""
    ctx, state = trainer.ctx, trainer.state
    score, weights = best_of(row)
    improved = score > state.best_acc1
    if improved:
        state.best_acc1, state.best_epoch, state.best_weights = score, row.epoch, weights
        row.saved = weights
    state.history.append(row)
    state.epoch = row.epoch
    if ctx.is_main:
        trainer.saver.save_epoch(state, improved)
        trainer._write_metrics()
        trainer._log_epoch(log, row, lrs)
        if trainer.on_epoch is not None:
            try:
                trainer.on_epoch(row)
            except StopRun as request:
                trainer.stop_requested = request.reason
    if ctx.enabled:  # the callback runs on rank 0; every rank stops with it
        trainer.stop_requested = ctx.broadcast(trainer.stop_requested)
    ctx.barrier()
