"""Command `finetune`: transfer learning with frozen layers, AMP, schedulers, resume and DDP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolbox.cli import render
from toolbox.cli.errors import handle_errors
from toolbox.cli.finetune_settings import OUT, Settings, with_settings
from toolbox.cli.finetune_tables import kept as _kept
from toolbox.cli.finetune_tables import pct as _pct
from toolbox.cli.finetune_tables import show_segment_result as _show_segment_result
from toolbox.cli.finetune_tables import with_ema as _with_ema
from toolbox.cli.options import JsonOpt
from toolbox.train import FinetuneConfig

if TYPE_CHECKING:
    from rich.table import Table

    from toolbox.train import EpochRow, FinetuneResult, RunStart
    from toolbox.train.segment import SegmentEpochRow


def _settings(start: RunStart) -> Table:
    """The settings table: shown on stderr as the run starts, and again in the final report on
    stdout, which is the run's record (`tb finetune > log` keeps it; args.yaml has it too)."""
    resumed = f" (resuming at epoch {start.start_epoch})" if start.start_epoch > 1 else ""
    rows = [
        ("data", start.data),
        ("images", f"{start.train_images} train, {start.val_images} val, "
                   f"{len(start.classes)} classes"
                   + (f", {start.skipped} file(s) skipped" if start.skipped else "")
                   + (", decoded once into memory" if start.cached else "")),
        ("model", f"{start.model} ({start.weights})"),
        ("input", "x".join(str(v) for v in start.input_size) + f" ({start.resize})"),
        *([("class counts", ", ".join(f"{name} {n}" for name, n in start.class_counts.items())
            + " (train; imbalanced more than 3:1)")] if start.class_counts else []),
        ("parameters", f"{render.human_count(start.total_params)} total, "
                       f"{render.human_count(start.trainable_params)} trainable, "
                       f"{render.human_count(start.frozen_params)} frozen"),
        ("device", f"{start.device}" + (f" x {start.world_size} processes"
                                        if start.world_size > 1 else "")),
        ("mixed precision", start.amp),
        *([("features", start.features)] if start.features else []),
        *[("recipe", line) for line in start.recipe],
        ("learning rate", f"{start.lr:g}" + (f" ({start.lr_note})" if start.lr_note else "")),
        ("epochs", f"{start.epochs}{resumed}"),
        ("run folder", str(start.run_dir)),
    ]
    return render.key_values("tb finetune", rows)


def _show_start(start: RunStart, json_output: bool) -> None:
    for message in start.warnings:
        render.warn(message)
    for message in start.notes:
        render.note(message)
    if not json_output:
        render.stderr.print(_settings(start))


def _show_epoch(row: EpochRow | SegmentEpochRow, topk: int) -> None:
    if hasattr(row, "val_miou"):
        render.note(f"epoch {row.epoch}: train loss {row.train_loss:.3f} | val loss "
                    f"{row.val_loss:.3f} mIoU {_pct(row.val_miou)} Dice {_pct(row.val_dice)} "
                    f"pixel acc {_pct(row.val_pixel_acc)}{_ema_note(row)} | lr {row.lr:.2g} | "
                    f"{row.images_per_s:.0f} img/s | {row.epoch_time_s:.1f}s")
        return
    render.note(f"epoch {row.epoch}: train loss {row.train_loss:.3f} acc {_pct(row.train_acc1)}"
                f" | val loss {row.val_loss:.3f} acc {_pct(row.val_acc1)} top-{topk} "
                f"{_pct(row.val_acc5)}{_ema_note(row)} | lr {row.lr:.2g} | "
                f"{row.images_per_s:.0f} img/s | {row.epoch_time_s:.1f}s")


def _ema_note(row: EpochRow | SegmentEpochRow) -> str:
    """The EMA weights' score in an epoch line (with --ema)."""
    if row.ema_val_loss is None:
        return ""
    name = "mIoU" if hasattr(row, "val_miou") else "acc"
    return f" | EMA {name} {_pct(getattr(row, 'ema_' + row.SCORE))}"


def _show_result(result: FinetuneResult) -> None:
    if result.start is not None:
        render.show(_settings(result.start))
    if hasattr(result, "best_val_miou"):
        _show_segment_result(result)
        _show_run(result)
        return
    topk = result.start.topk if result.start is not None else 5
    columns = ["epoch", "train loss", "train acc", "val loss", "val acc", f"top-{topk}", "lr",
               "img/s", "time"]
    rows = [(r.epoch, f"{r.train_loss:.3f}", _pct(r.train_acc1), f"{r.val_loss:.3f}",
             _pct(r.val_acc1), _pct(r.val_acc5), f"{r.lr:.2g}", f"{r.images_per_s:.0f}",
             f"{r.epoch_time_s:.1f}s") for r in result.epochs]
    columns, rows = _with_ema(columns, rows, result.epochs, after="val acc")
    table = render.table(None, columns, rows, right=columns)
    table.show_edge = table.pad_edge = False  # nine columns fit 80 characters (ten with --ema)
    render.show(table)
    per_class = [(name, _pct(acc)) for name, acc in result.per_class_acc.items()]
    render.show(render.table(None, ["class", "val accuracy"], per_class,
                             right=["val accuracy"]))
    render.stdout.print(f"val accuracy {_pct(result.best_val_acc1)} (best epoch "
                        f"{result.best_epoch}, {_kept(result)}saved as {result.model_file})")
    _show_run(result)


def _show_run(result: FinetuneResult) -> None:
    render.stdout.print(f"stopped: {result.stop_reason}")
    render.stdout.print(f"run: {result.run_dir}")
    render.stdout.print(f"see it in TensorBoard: {result.tensorboard_command}")


@with_settings
def finetune_command(
    ctx: typer.Context,
    settings: Settings,
    print_config: Annotated[bool, typer.Option(
        "--print-config", help="Print the resolved settings as YAML and exit.",
        rich_help_panel=OUT)] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Run folder (default: runs/<date-time>-<model>).", show_default=False,
        rich_help_panel=OUT)] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue a run: its folder or a checkpoint .pt.",
        rich_help_panel=OUT)] = None,
    json_output: JsonOpt = False,
) -> None:
    """Fine-tune a model on your classes and leave a run folder for TensorBoard, resume and
    `tb predict`.

    With no data option it trains on a built-in demo data set (scikit-learn's handwritten
    digits, no network needed). Under `torchrun --nproc_per_node N -m toolbox finetune ...` it
    trains with DistributedDataParallel.

    Examples:
      tb finetune --freeze --amp
      tb finetune --data photos/ --model resnet50 --freeze --unfreeze-at 3
      tb finetune --data labels.csv --split-column split --freeze
      tb finetune --data 'shards/train-{000000..000063}.tar' --workers 8
      tb finetune --data skewed/ --class-weights auto --resize letterbox
      tb finetune --weights runs/a/model.safetensors --freeze --data other/
      tb finetune --resume runs/20260101-120000-tf_efficientnet_lite0
      tb finetune --resume runs/20260101-120000-tf_efficientnet_lite0 --epochs 10
      tb finetune --config runs/a/args.yaml --lr 3e-4
      tb finetune --task segment --data seg/ --model resnet18 --loss dice
      tb finetune --data photos/ --model resnet50 --ema --mixup 0.2 --cutmix 1.0
    """
    from toolbox.cli.progress import make_progress
    from toolbox.errors import UsageError
    from toolbox.train import (
        ResumeOverrides,
        config_yaml,
        finetune,
        is_main_process,
        plan_resume,
    )

    main_rank = is_main_process()
    overrides = None
    if resume is not None:
        if settings.values["config_file"] is not None:
            raise UsageError("--config starts a new run; --resume continues one with its "
                             "own settings", "drop one of them")
        given = {**settings.given(), "out": str(out) if out else None}
        overrides = ResumeOverrides(others={key: given[key] for key in settings.typed("out")})
        if print_config:
            plan = plan_resume(resume, overrides.given())
            for line in plan.changes:
                render.note(line)
            render.print_text(config_yaml(plan.config))
            return
        config = FinetuneConfig()  # the run's own settings are used, with `overrides`
    else:
        config, notes = settings.resolve({"out": str(out) if out else None})
        for line in notes:
            render.note(line)
        if print_config:
            config.validate()
            config.resolve_lr()  # printed as the run will use it
            render.print_text(config_yaml(config))
            return
    topk = [5]  # known once the data is: the epoch lines say top-K, never more than classes

    def on_start(start: RunStart) -> None:
        topk[0] = start.topk
        _show_start(start, json_output)

    def on_epoch(row: EpochRow) -> None:
        _show_epoch(row, topk[0])

    result = finetune(
        config, resume=resume, resume_overrides=overrides,
        progress=make_progress(enabled=main_rank and not json_output),
        on_start=on_start, on_epoch=None if json_output else on_epoch)
    if not main_rank:
        return
    if json_output:
        data_out = render.to_jsonable(result)
        for row in data_out["epochs"]:
            row.pop("per_class", None)
            row.pop("per_class_dice", None)
        render.print_json(data_out)
    else:
        _show_result(result)


def register(app: typer.Typer) -> None:
    """Mount this module's commands on the root app."""
    app.command("finetune")(handle_errors(finetune_command))
