"""The settings options of `tb finetune` (every knob of one run), defined once: `tb finetune`
and `tb tune` both take them all (`with_settings`), and both read them into a `FinetuneConfig`
the same way (`Settings.resolve`)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from toolbox.cli.options import (
    DATA_PANEL,
    DeviceOpt,
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

# Every default comes from the service's config, so the CLI and the Python API cannot drift.
_D = FinetuneConfig()

DATA = DATA_PANEL
MODEL = "Model"
TRAIN = "Training"
OUT = "Outputs"
# Parameters whose setting has another name; `config_file` is where settings come from.
_SETTING_OF = {"compile_model": "compile", "no_feature_cache": "feature_cache"}
_LR_DEFAULTS = ", ".join(f"{lr:g} {mode}" for mode, lr in DEFAULT_LR.items())


def _options(
    config_file: Annotated[Path | None, typer.Option(
        "--config", help="Settings from a YAML file (a run's args.yaml replays that run); "
                         "flags given here win.", rich_help_panel=OUT)] = None,
    task: Annotated[str, typer.Option(
        "--task", help="classify (one label an image) or segment (a label a pixel: "
                       "DIR/train/images + DIR/train/masks).", rich_help_panel=DATA)
    ] = _D.task,
    data: Annotated[str | None, typer.Option(
        "--data", help="ImageFolder tree DIR/<class>/<image> (DIR/train and DIR/val when "
                       "present, else --val-split), a CSV of paths and labels, or tar shards "
                       "('shards/train-{000000..000063}.tar', globs, URLs, a packed folder).",
        rich_help_panel=DATA)] = None,
    labels: LabelsOpt = None,
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
    split_column: SplitColumnOpt = None,
    val_data: ValDataOpt = None,
    shuffle_buffer: ShuffleBufferOpt = _D.shuffle_buffer,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="A data set fetched by `tb datasets fetch` (official train/test).",
        rich_help_panel=DATA)] = None,
    root: Annotated[Path | None, typer.Option(
        "--root", help="Folder that holds fetched data sets (with --dataset).",
        rich_help_panel=DATA)] = None,
    val_split: Annotated[float, typer.Option(
        "--val-split", help="Stratified, seeded validation fraction when there is no val/.",
        rich_help_panel=DATA)] = _D.val_split,
    img_size: Annotated[int | None, typer.Option(
        "--img-size", help="Input size (default: the model's pretrained config; "
                           f"{DEMO_IMG_SIZE} for the demo digits).",
        rich_help_panel=DATA)] = None,
    augment: Annotated[str | None, typer.Option(
        "--augment", help="Training augmentation: a preset (light, medium, heavy), an inline "
                          "spec or a YAML/JSON file, as `tb augment` takes.",
        rich_help_panel=DATA)] = None,
    cache: Annotated[bool | None, typer.Option(
        "--cache/--no-cache", help="Decode images once into memory (default: when they fit "
                                   "in 4 GiB).", show_default=False, rich_help_panel=DATA)
    ] = None,
    resize: Annotated[str, typer.Option(
        "--resize", help="How an image meets the input size: crop (shorter side, centre crop), "
                         "squash (to SxS, aspect lost) or letterbox (longer side, padded with "
                         "black). Recorded in the model file for predict, evaluate "
                         "and export.", rich_help_panel=DATA)] = _D.resize,
    sampler: Annotated[str, typer.Option(
        "--sampler", help="shuffle (each image once an epoch) or balanced (draws with "
                          "replacement, every class equally likely).", rich_help_panel=DATA)
    ] = _D.sampler,
    model: Annotated[str, typer.Option(
        "--model", help="timm or torchvision name, as `tb models list` shows.",
        rich_help_panel=MODEL)] = _D.model,
    pretrained: Annotated[bool, typer.Option(
        "--pretrained/--no-pretrained", help="Start from ImageNet weights: the hub cache, a "
                                             "weight package (tf_efficientnet_lite0/1/2) or "
                                             "the hub; none of them: random init.",
        rich_help_panel=MODEL)] = _D.pretrained,
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Start from a local .safetensors/.pth (e.g. an earlier run's "
                          "model.safetensors); a head of another size is dropped.",
        rich_help_panel=MODEL)] = None,
    decoder: Annotated[str, typer.Option(
        "--decoder", help="--task segment: fpn or unet over the model's features_only "
                          "encoder.", rich_help_panel=MODEL)] = _D.decoder,
    freeze: Annotated[bool, typer.Option(
        "--freeze", help="Train only the new head (the decoder when segmenting); the backbone "
                         "and its BatchNorm statistics stay fixed.", rich_help_panel=MODEL)
    ] = _D.freeze,
    unfreeze_at: Annotated[int | None, typer.Option(
        "--unfreeze-at", help="With --freeze: train the backbone too from this epoch on.",
        rich_help_panel=MODEL)] = None,
    feature_cache_dir: Annotated[Path | None, typer.Option(
        "--feature-cache", help="With --freeze: keep the backbone's features in DIR (default: "
                                "features/ in tb's cache folder); a later run on the same "
                                "images and model reuses them.", metavar="DIR",
        show_default=False, rich_help_panel=MODEL)] = None,
    no_feature_cache: Annotated[bool, typer.Option(
        "--no-feature-cache", help="With --freeze: run the backbone on every image every "
                                   "epoch instead of once.", rich_help_panel=MODEL)
    ] = not _D.feature_cache,
    backbone_lr_scale: Annotated[float, typer.Option(
        "--backbone-lr-scale", help="Backbone learning rate = lr x this, after --unfreeze-at.",
        rich_help_panel=MODEL)] = _D.backbone_lr_scale,
    layer_decay: Annotated[float | None, typer.Option(
        "--layer-decay", help="Layer-wise lr decay: each layer below the top learns at this "
                              "times the lr of the one above (timm architectures).",
        rich_help_panel=TRAIN)] = _D.layer_decay,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", help=f"Epochs to train (default: {_D.epochs}); with --resume, a new total.",
        show_default=False, rich_help_panel=TRAIN)] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Images per step (per process under torchrun).",
        rich_help_panel=TRAIN)] = _D.batch_size,
    lr: Annotated[float | None, typer.Option(
        "--lr", help=f"Peak learning rate (default by mode: {_LR_DEFAULTS}).",
        show_default=False, rich_help_panel=TRAIN)] = _D.lr,
    weight_decay: Annotated[float, typer.Option(
        "--weight-decay", help="Weight decay (not on biases and norms).",
        rich_help_panel=TRAIN)] = _D.weight_decay,
    opt: Annotated[str, typer.Option("--opt", help="adamw, adam or sgd.",
                                     rich_help_panel=TRAIN)] = _D.opt,
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum (Nesterov).",
                                            rich_help_panel=TRAIN)] = _D.momentum,
    sched: Annotated[str, typer.Option(
        "--sched", help="cosine, step, multistep, exponential, onecycle, plateau or none.",
        rich_help_panel=TRAIN)] = _D.sched,
    warmup_epochs: Annotated[int, typer.Option(
        "--warmup-epochs", help="Linear warm-up epochs before the schedule.",
        rich_help_panel=TRAIN)] = _D.warmup_epochs,
    step_size: Annotated[int | None, typer.Option(
        "--step-size", help="step: epochs between decays (default: a third of the run).",
        show_default=False, rich_help_panel=TRAIN)] = None,
    milestones: Annotated[str | None, typer.Option(
        "--milestones", help="multistep: comma-separated epochs (default: 1/2 and 3/4).",
        rich_help_panel=TRAIN)] = None,
    gamma: Annotated[float, typer.Option(
        "--gamma", help="Decay factor of step, multistep and exponential.",
        rich_help_panel=TRAIN)] = _D.gamma,
    loss: Annotated[str, typer.Option("--loss", help="ce, focal, bce or dice; segment: ce, "
                                                     "dice, ce+dice or focal.",
                                      rich_help_panel=TRAIN)] = _D.loss,
    label_smoothing: Annotated[float, typer.Option(
        "--label-smoothing", help="Label smoothing for ce (and bce).",
        rich_help_panel=TRAIN)] = _D.label_smoothing,
    class_weights: Annotated[str, typer.Option(
        "--class-weights", help="none, or auto: weigh the loss (ce, focal) by inverse class "
                                "frequency of the training split, mean weight 1.",
        rich_help_panel=TRAIN)] = _D.class_weights,
    mixup: Annotated[float, typer.Option(
        "--mixup", help="Mixup alpha (timm's Mixup: soft targets, soft-target cross-entropy); "
                        "0 is off.", rich_help_panel=TRAIN)] = _D.mixup,
    cutmix: Annotated[float, typer.Option(
        "--cutmix", help="CutMix alpha; 0 is off. With --mixup too, each batch uses one of "
                         "them.", rich_help_panel=TRAIN)] = _D.cutmix,
    ema: Annotated[bool, typer.Option(
        "--ema/--no-ema", help="Keep an exponential moving average of the weights (timm's "
                               "ModelEmaV3), validate it too and keep the better weights.",
        rich_help_panel=TRAIN)] = _D.ema,
    ema_decay: Annotated[float, typer.Option(
        "--ema-decay", help="EMA decay, reached after a warm-up from 0 (short runs still "
                            "average usefully).", rich_help_panel=TRAIN)] = _D.ema_decay,
    patience: Annotated[int | None, typer.Option(
        "--patience", help="Stop when the validation accuracy has not improved for this many "
                           "epochs.", rich_help_panel=TRAIN)] = _D.patience,
    min_delta: Annotated[float, typer.Option(
        "--min-delta", help="With --patience: the accuracy gain (0.01 = 1 point) that counts "
                            "as an improvement.", rich_help_panel=TRAIN)] = _D.min_delta,
    grad_accum: Annotated[int, typer.Option(
        "--grad-accum", help="Batches per optimizer step.",
        rich_help_panel=TRAIN)] = _D.grad_accum,
    clip_grad: Annotated[float | None, typer.Option(
        "--clip-grad", help="Clip the gradient norm to this.", rich_help_panel=TRAIN)] = None,
    amp: Annotated[bool, typer.Option(
        "--amp", help="Mixed precision: float16 + GradScaler on CUDA, bfloat16 on the CPU.",
        rich_help_panel=TRAIN)] = _D.amp,
    amp_dtype: Annotated[str, typer.Option(
        "--amp-dtype", help="auto, fp16 or bf16.", rich_help_panel=TRAIN)] = _D.amp_dtype,
    channels_last: Annotated[bool, typer.Option(
        "--channels-last", help="NHWC memory layout (often faster for convolutions).",
        rich_help_panel=TRAIN)] = _D.channels_last,
    compile_model: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the model.", rich_help_panel=TRAIN)] = _D.compile,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = _D.device,
) -> None:
    """Every settings option: this signature is what `with_settings` adds to a command."""


def _parameters() -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(_options, eval_str=True).parameters)


@dataclass
class Settings:
    """The settings options as typed (or defaulted) on one command line."""

    ctx: typer.Context
    values: dict[str, Any]

    def given(self) -> dict[str, Any]:
        """The values by `FinetuneConfig` name (paths made absolute, so `args.yaml` and
        `--resume` work from any folder; None: not given, the config's default applies).

        Raises:
            typer.BadParameter: `--milestones` is not a list of epoch numbers.
        """
        v = dict(self.values)
        v.pop("config_file")
        milestones = v.pop("milestones")
        try:
            v["milestones"] = ([int(m) for m in milestones.split(",") if m.strip()]
                               if milestones else [])
        except ValueError:
            raise typer.BadParameter("comma-separated epoch numbers, e.g. 3,6",
                                     param_hint="--milestones") from None
        v["data"], v["val_data"] = data_location(v["data"]), data_location(v["val_data"])
        v.update(table_settings(labels=v.pop("labels"), path_column=v.pop("path_column"),
                                label_column=v.pop("label_column"),
                                split_column=v.pop("split_column")))
        for key in ("root", "weights", "feature_cache_dir"):
            v[key] = str(Path(v[key]).resolve()) if v[key] else None
        v["feature_cache"] = not v.pop("no_feature_cache")
        v["compile"] = v.pop("compile_model")
        return v

    def typed(self, *others: str) -> set[str]:
        """The settings typed on the command line (or set in the environment), by
        `FinetuneConfig` name: only those override a config file or a resumed run. Typer's
        parameter source tells them from defaults; `others` are the command's own parameters
        that are settings too (finetune's `--out`)."""
        names = [n for n in self.values if n != "config_file"] + list(others)
        return {_SETTING_OF.get(name, name) for name in names
                if self.ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")}

    def resolve(self, extra: dict[str, Any] | None = None, typed: set[str] | None = None
                ) -> tuple[FinetuneConfig, list[str]]:
        """The run's settings: flags typed here over `--config FILE` over the defaults, with
        `extra` settings of the command's own (finetune's `out`); and notes for the user.
        `typed` replaces `typed()` when the command knows better."""
        from toolbox.train import read_config_file, resolve_config

        config_file = self.values["config_file"]
        file_values = read_config_file(config_file) if config_file is not None else {}
        given = {**self.given(), **(extra or {})}
        # An option left unset (None) takes the config's default (--epochs and --seed have
        # none of their own, since with --resume "unset" means "keep the run's").
        return resolve_config(file_values, {k: v for k, v in given.items() if v is not None},
                              self.typed(*(extra or {})) if typed is None else typed)


def with_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command(ctx, settings, **own)` as a command that takes every settings option as well.

    The command's first parameter is its `typer.Context`, and `settings` receives a `Settings`;
    `--help` shows the command's own options first, then the settings. An own parameter with a
    setting's name replaces that option (`tb tune` has its own `--sampler`, which also takes
    the data sampler's values).
    """
    own = dict(inspect.signature(command, eval_str=True).parameters)
    own.pop("settings")
    shared = {name: p for name, p in _parameters().items() if name not in own}
    first, *rest = own.values()
    params = [first, *rest, *shared.values()]
    names = [n for n in shared if n != first.name]

    @functools.wraps(command)
    def merged(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in names}
        return command(*args, settings=Settings(kwargs[first.name], values), **kwargs)

    # Typer reads a command's options from its signature.
    merged.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    merged.__annotations__ = {p.name: p.annotation for p in params}
    return merged
