"""What a fine-tuning run starts with: the model for the run (new head or checkpoint weights),
the start table, and `args.yaml` beside the outputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from toolbox import runs
from toolbox.fileio import atomic_write_text
from toolbox.models import ModelMeta
from toolbox.train import balance
from toolbox.train.checkpoint import check_classes, load_model_state
from toolbox.train.config import FinetuneConfig
from toolbox.train.metrics import topk_for
from toolbox.train.modeling import TrainableModel, build_model, parameter_counts
from toolbox.train.results import RunStart


def _not_images_note(skipped: list[Any]) -> list[str]:
    if not skipped:
        return []
    shown = ", ".join(f"{s.path} ({s.reason})" for s in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return [f"left out {len(skipped)} file(s) that are not images: {shown}{more}"]


def model_for_run(cfg: FinetuneConfig, classes: list[str], saved: dict[str, Any] | None,
                  resumed_from: Path | None, device: torch.device
                  ) -> tuple[TrainableModel, ModelMeta]:
    """The model with its new head (or a checkpoint's weights) on `device`, and its meta."""
    if saved is not None:
        check_classes(saved, classes)
    built = build_model(model=cfg.model, class_names=classes,
                        pretrained=cfg.pretrained and saved is None,
                        weights=cfg.weights if saved is None else None,
                        img_size=cfg.img_size, seed=cfg.seed, freeze=cfg.freeze)
    # A resumed run keeps the geometry its model file records (--resize cannot change).
    meta = (ModelMeta.from_dict(saved["meta"]) if saved is not None
            else dataclasses.replace(built.meta, resize=cfg.resize))
    if saved is not None:
        load_model_state(built.model, saved, resumed_from, cfg.model)
    built.model.to(device)
    if cfg.channels_last:
        built.model.to(memory_format=torch.channels_last)
    return built, meta


def run_start(trainer: Any, splits: Any, weights: str, notes: list[str], warnings: list[str]
              ) -> RunStart:
    """The start table of `trainer` (a `Trainer`, set up) for its data `splits`."""
    state, data, cfg = trainer.state, trainer.data, trainer.cfg
    total, trainable, frozen = parameter_counts(trainer.model)
    train_images, val_images, unreadable, skipped = data.counts(trainer.ctx)
    return RunStart(
        run_dir=trainer.run_dir, data=splits.description, train_images=train_images,
        val_images=val_images, skipped=unreadable + len(splits.not_images),
        classes=splits.classes, model=state.meta.model,
        weights=weights, input_size=tuple(state.meta.input_size), resize=state.meta.resize,
        total_params=total,
        trainable_params=trainable, frozen_params=frozen, device=str(trainer.device),
        amp=trainer.amp.label, world_size=trainer.ctx.world_size, epochs=trainer.cfg.epochs,
        start_epoch=state.epoch + 1, cached=data.cached, topk=topk_for(len(splits.classes)),
        lr=float(trainer.cfg.lr), lr_note=trainer.lr_note,
        class_counts=balance.shown_counts(data.class_counts, splits.classes),
        notes=[*notes, *_not_images_note(splits.not_images),
               *data.imbalance_hint(cfg.class_weights, cfg.sampler)],
        warnings=[*warnings, *skipped], features=data.features,
        recipe=[*recipe_lines(cfg), *data.balance_lines(cfg.class_weights, cfg.sampler)])


def recipe_lines(cfg: FinetuneConfig) -> list[str]:
    """The start table's line for each recipe option in use (EMA, mixing)."""
    lines = []
    if cfg.mixup or cfg.cutmix:
        lines.append(f"mixup {cfg.mixup:g}, cutmix {cfg.cutmix:g}: soft targets, train accuracy "
                     f"against each one's largest class")
    if cfg.ema:
        lines.append(f"EMA of the weights, decay {cfg.ema_decay:g} after a warm-up; the better "
                     f"of raw and EMA is kept")
    return lines


def write_args(run_dir: Path, cfg: FinetuneConfig, start: RunStart) -> None:
    """The run's settings beside its outputs (`args.yaml`, as timm writes it): the options,
    then what they resolved to (`--resume` reads only the options)."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / runs.ARGS_FILE, yaml.safe_dump(
        {**cfg.to_dict(), "resolved": start.settings()}, sort_keys=False))
