"""Command `finetune`: transfer learning with frozen layers, AMP, schedulers, resume and DDP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolbox.cli import render
from toolbox.cli.errors import handle_errors
from toolbox.cli.finetune_tables import kept as _kept
from toolbox.cli.finetune_tables import pct as _pct
from toolbox.cli.finetune_tables import show_segment_result as _show_segment_result
from toolbox.cli.finetune_tables import with_ema as _with_ema
from toolbox.cli.options import (
    DATA_PANEL,
    DeviceOpt,
    JsonOpt,
    LabelColumnOpt,
    LabelsOpt,
    PathColumnOpt,
    SeedOpt,
    ShuffleBufferOpt,
    SplitColumnOpt,
    ValDataOpt,
    WorkersOpt,
    data_location,
    table_settings,
)
from toolbox.train import DEFAULT_LR, DEMO_IMG_SIZE, FinetuneConfig

if TYPE_CHECKING:
    from rich.table import Table

    from toolbox.train import EpochRow, FinetuneResult, RunStart
    from toolbox.train.segment import SegmentEpochRow

# Every default comes from the service's config, so the CLI and the Python API cannot drift.
_D = FinetuneConfig()

_DATA = DATA_PANEL
_MODEL = "Model"
_TRAIN = "Training"
_OUT = "Outputs"
# Command parameters that are not run settings, and parameters whose setting has another name.
_NOT_SETTINGS = ("ctx", "config_file", "print_config", "resume", "json_output")
_SETTING_OF = {"compile_model": "compile", "no_feature_cache": "feature_cache"}
_LR_DEFAULTS = ", ".join(f"{lr:g} {mode}" for mode, lr in DEFAULT_LR.items())


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


def finetune_command(
    ctx: typer.Context,
    config_file: Annotated[Path | None, typer.Option(
        "--config", help="Settings from a YAML file (a run's args.yaml replays that run); "
                         "flags given here win.", rich_help_panel=_OUT)] = None,
    print_config: Annotated[bool, typer.Option(
        "--print-config", help="Print the resolved settings as YAML and exit.",
        rich_help_panel=_OUT)] = False,
    task: Annotated[str, typer.Option(
        "--task", help="classify (one label an image) or segment (a label a pixel: "
                       "DIR/train/images + DIR/train/masks).", rich_help_panel=_DATA)
    ] = _D.task,
    data: Annotated[str | None, typer.Option(
        "--data", help="ImageFolder tree DIR/<class>/<image> (DIR/train and DIR/val when "
                       "present, else --val-split), a CSV of paths and labels, or tar shards "
                       "('shards/train-{000000..000063}.tar', globs, URLs, a packed folder).",
        rich_help_panel=_DATA)] = None,
    labels: LabelsOpt = None,
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
    split_column: SplitColumnOpt = None,
    val_data: ValDataOpt = None,
    shuffle_buffer: ShuffleBufferOpt = _D.shuffle_buffer,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="A data set fetched by `tb datasets fetch` (official train/test).",
        rich_help_panel=_DATA)] = None,
    root: Annotated[Path | None, typer.Option(
        "--root", help="Folder that holds fetched data sets (with --dataset).",
        rich_help_panel=_DATA)] = None,
    val_split: Annotated[float, typer.Option(
        "--val-split", help="Stratified, seeded validation fraction when there is no val/.",
        rich_help_panel=_DATA)] = _D.val_split,
    img_size: Annotated[int | None, typer.Option(
        "--img-size", help="Input size (default: the model's pretrained config; "
                           f"{DEMO_IMG_SIZE} for the demo digits).",
        rich_help_panel=_DATA)] = None,
    augment: Annotated[str | None, typer.Option(
        "--augment", help="Training augmentation: a preset (light, medium, heavy), an inline "
                          "spec or a YAML/JSON file, as `tb augment` takes.",
        rich_help_panel=_DATA)] = None,
    cache: Annotated[bool | None, typer.Option(
        "--cache/--no-cache", help="Decode images once into memory (default: when they fit "
                                   "in 4 GiB).", show_default=False, rich_help_panel=_DATA)
    ] = None,
    resize: Annotated[str, typer.Option(
        "--resize", help="How an image meets the input size: crop (shorter side, centre crop), "
                         "squash (to SxS, aspect lost) or letterbox (longer side, padded with "
                         "black). Recorded in the model file for predict, evaluate "
                         "and export.", rich_help_panel=_DATA)] = _D.resize,
    sampler: Annotated[str, typer.Option(
        "--sampler", help="shuffle (each image once an epoch) or balanced (draws with "
                          "replacement, every class equally likely).", rich_help_panel=_DATA)
    ] = _D.sampler,
    model: Annotated[str, typer.Option(
        "--model", help="timm or torchvision name, as `tb models list` shows.",
        rich_help_panel=_MODEL)] = _D.model,
    pretrained: Annotated[bool, typer.Option(
        "--pretrained/--no-pretrained", help="Start from ImageNet weights: the hub cache, a "
                                             "weight package (tf_efficientnet_lite0/1/2) or "
                                             "the hub; none of them: random init.",
        rich_help_panel=_MODEL)] = _D.pretrained,
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Start from a local .safetensors/.pth (e.g. an earlier run's "
                          "model.safetensors); a head of another size is dropped.",
        rich_help_panel=_MODEL)] = None,
    decoder: Annotated[str, typer.Option(
        "--decoder", help="--task segment: fpn or unet over the model's features_only "
                          "encoder.", rich_help_panel=_MODEL)] = _D.decoder,
    freeze: Annotated[bool, typer.Option(
        "--freeze", help="Train only the new head (the decoder when segmenting); the backbone "
                         "and its BatchNorm statistics stay fixed.", rich_help_panel=_MODEL)
    ] = _D.freeze,
    unfreeze_at: Annotated[int | None, typer.Option(
        "--unfreeze-at", help="With --freeze: train the backbone too from this epoch on.",
        rich_help_panel=_MODEL)] = None,
    feature_cache_dir: Annotated[Path | None, typer.Option(
        "--feature-cache", help="With --freeze: keep the backbone's features in DIR (default: "
                                "features/ in tb's cache folder); a later run on the same "
                                "images and model reuses them.", metavar="DIR",
        show_default=False, rich_help_panel=_MODEL)] = None,
    no_feature_cache: Annotated[bool, typer.Option(
        "--no-feature-cache", help="With --freeze: run the backbone on every image every "
                                   "epoch instead of once.", rich_help_panel=_MODEL)
    ] = not _D.feature_cache,
    backbone_lr_scale: Annotated[float, typer.Option(
        "--backbone-lr-scale", help="Backbone learning rate = lr x this, after --unfreeze-at.",
        rich_help_panel=_MODEL)] = _D.backbone_lr_scale,
    layer_decay: Annotated[float | None, typer.Option(
        "--layer-decay", help="Layer-wise lr decay: each layer below the top learns at this "
                              "times the lr of the one above (timm architectures).",
        rich_help_panel=_TRAIN)] = _D.layer_decay,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", help=f"Epochs to train (default: {_D.epochs}); with --resume, a new total.",
        show_default=False, rich_help_panel=_TRAIN)] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Images per step (per process under torchrun).",
        rich_help_panel=_TRAIN)] = _D.batch_size,
    lr: Annotated[float | None, typer.Option(
        "--lr", help=f"Peak learning rate (default by mode: {_LR_DEFAULTS}).",
        show_default=False, rich_help_panel=_TRAIN)] = _D.lr,
    weight_decay: Annotated[float, typer.Option(
        "--weight-decay", help="Weight decay (not on biases and norms).",
        rich_help_panel=_TRAIN)] = _D.weight_decay,
    opt: Annotated[str, typer.Option("--opt", help="adamw, adam or sgd.",
                                     rich_help_panel=_TRAIN)] = _D.opt,
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum (Nesterov).",
                                            rich_help_panel=_TRAIN)] = _D.momentum,
    sched: Annotated[str, typer.Option(
        "--sched", help="cosine, step, multistep, exponential, onecycle, plateau or none.",
        rich_help_panel=_TRAIN)] = _D.sched,
    warmup_epochs: Annotated[int, typer.Option(
        "--warmup-epochs", help="Linear warm-up epochs before the schedule.",
        rich_help_panel=_TRAIN)] = _D.warmup_epochs,
    step_size: Annotated[int | None, typer.Option(
        "--step-size", help="step: epochs between decays (default: a third of the run).",
        show_default=False, rich_help_panel=_TRAIN)] = None,
    milestones: Annotated[str | None, typer.Option(
        "--milestones", help="multistep: comma-separated epochs (default: 1/2 and 3/4).",
        rich_help_panel=_TRAIN)] = None,
    gamma: Annotated[float, typer.Option(
        "--gamma", help="Decay factor of step, multistep and exponential.",
        rich_help_panel=_TRAIN)] = _D.gamma,
    loss: Annotated[str, typer.Option("--loss", help="ce, focal, bce or dice; segment: ce, "
                                                     "dice, ce+dice or focal.",
                                      rich_help_panel=_TRAIN)] = _D.loss,
    label_smoothing: Annotated[float, typer.Option(
        "--label-smoothing", help="Label smoothing for ce (and bce).",
        rich_help_panel=_TRAIN)] = _D.label_smoothing,
    class_weights: Annotated[str, typer.Option(
        "--class-weights", help="none, or auto: weigh the loss (ce, focal) by inverse class "
                                "frequency of the training split, mean weight 1.",
        rich_help_panel=_TRAIN)] = _D.class_weights,
    mixup: Annotated[float, typer.Option(
        "--mixup", help="Mixup alpha (timm's Mixup: soft targets, soft-target cross-entropy); "
                        "0 is off.", rich_help_panel=_TRAIN)] = _D.mixup,
    cutmix: Annotated[float, typer.Option(
        "--cutmix", help="CutMix alpha; 0 is off. With --mixup too, each batch uses one of "
                         "them.", rich_help_panel=_TRAIN)] = _D.cutmix,
    ema: Annotated[bool, typer.Option(
        "--ema/--no-ema", help="Keep an exponential moving average of the weights (timm's "
                               "ModelEmaV3), validate it too and keep the better weights.",
        rich_help_panel=_TRAIN)] = _D.ema,
    ema_decay: Annotated[float, typer.Option(
        "--ema-decay", help="EMA decay, reached after a warm-up from 0 (short runs still "
                            "average usefully).", rich_help_panel=_TRAIN)] = _D.ema_decay,
    patience: Annotated[int | None, typer.Option(
        "--patience", help="Stop when the validation accuracy has not improved for this many "
                           "epochs.", rich_help_panel=_TRAIN)] = _D.patience,
    min_delta: Annotated[float, typer.Option(
        "--min-delta", help="With --patience: the accuracy gain (0.01 = 1 point) that counts "
                            "as an improvement.", rich_help_panel=_TRAIN)] = _D.min_delta,
    grad_accum: Annotated[int, typer.Option(
        "--grad-accum", help="Batches per optimizer step.",
        rich_help_panel=_TRAIN)] = _D.grad_accum,
    clip_grad: Annotated[float | None, typer.Option(
        "--clip-grad", help="Clip the gradient norm to this.", rich_help_panel=_TRAIN)] = None,
    amp: Annotated[bool, typer.Option(
        "--amp", help="Mixed precision: float16 + GradScaler on CUDA, bfloat16 on the CPU.",
        rich_help_panel=_TRAIN)] = _D.amp,
    amp_dtype: Annotated[str, typer.Option(
        "--amp-dtype", help="auto, fp16 or bf16.", rich_help_panel=_TRAIN)] = _D.amp_dtype,
    channels_last: Annotated[bool, typer.Option(
        "--channels-last", help="NHWC memory layout (often faster for convolutions).",
        rich_help_panel=_TRAIN)] = _D.channels_last,
    compile_model: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the model.", rich_help_panel=_TRAIN)] = _D.compile,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = _D.device,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Run folder (default: runs/<date-time>-<model>).", show_default=False,
        rich_help_panel=_OUT)] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue a run: its folder or a checkpoint .pt.",
        rich_help_panel=_OUT)] = None,
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
        read_config_file,
        resolve_config,
    )

    try:
        milestone_list = [int(m) for m in milestones.split(",") if m.strip()] if milestones \
            else []
    except ValueError:
        raise typer.BadParameter("comma-separated epoch numbers, e.g. 3,6",
                                 param_hint="--milestones") from None
    main_rank = is_main_process()
    given = dict(
        task=task, decoder=decoder,
        # Absolute paths in args.yaml, so `--resume` works from any folder.
        data=data_location(data), dataset=dataset, val_data=data_location(val_data),
        shuffle_buffer=shuffle_buffer,
        **table_settings(labels=labels, path_column=path_column, label_column=label_column,
                         split_column=split_column),
        root=str(root.resolve()) if root else None,
        val_split=val_split, img_size=img_size, augment=augment, cache=cache, resize=resize,
        sampler=sampler, class_weights=class_weights, model=model,
        pretrained=pretrained, weights=str(weights.resolve()) if weights else None, freeze=freeze,
        unfreeze_at=unfreeze_at, backbone_lr_scale=backbone_lr_scale,
        feature_cache=not no_feature_cache,
        feature_cache_dir=str(feature_cache_dir.resolve()) if feature_cache_dir else None,
        epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, opt=opt, momentum=momentum, grad_accum=grad_accum,
        clip_grad=clip_grad, seed=seed, workers=workers,
        device=device, channels_last=channels_last, compile=compile_model, amp=amp,
        amp_dtype=amp_dtype, sched=sched, warmup_epochs=warmup_epochs, step_size=step_size,
        milestones=milestone_list, gamma=gamma, loss=loss, label_smoothing=label_smoothing,
        patience=patience, min_delta=min_delta, layer_decay=layer_decay, mixup=mixup,
        cutmix=cutmix, ema=ema, ema_decay=ema_decay,
        out=str(out) if out else None)
    # Only flags typed on the command line (or set in the environment) override a config file
    # or a resumed run; Typer's parameter source tells them from defaults.
    typed = {_SETTING_OF.get(name, name) for name in ctx.params
             if name not in _NOT_SETTINGS
             and ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")}
    overrides = None
    if resume is not None:
        if config_file is not None:
            raise UsageError("--config starts a new run; --resume continues one with its "
                             "own settings", "drop one of them")
        overrides = ResumeOverrides(others={key: given[key] for key in typed})
        if print_config:
            plan = plan_resume(resume, overrides.given())
            for line in plan.changes:
                render.note(line)
            render.print_text(config_yaml(plan.config))
            return
        config = FinetuneConfig()  # the run's own settings are used, with `overrides`
    else:
        file_values = read_config_file(config_file) if config_file is not None else {}
        # An option left unset (None) takes the config's default (--epochs and --seed have
        # none of their own, since with --resume "unset" means "keep the run's").
        config, notes = resolve_config(file_values, {k: v for k, v in given.items()
                                                     if v is not None}, typed)
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
