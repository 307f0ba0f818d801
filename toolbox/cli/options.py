"""Options shared by several commands, defined once as `Annotated` aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", show_default=True)
]
LogdirOpt = Annotated[
    Path | None, typer.Option("--tensorboard", help="Also write to TensorBoard in this log dir.")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (reproducible runs).")]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", help="Worker processes (default: number of cores).")
]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="A data set fetched by `tb datasets fetch`.")
]
RootOpt = Annotated[Path | None, typer.Option(
    "--root", help="Folder that holds fetched data sets (default: $TB_DATASETS_ROOT, else "
    "datasets/ in the tb cache dir).", show_default=False)]
RunOpt = Annotated[Path | None, typer.Option(
    "--run", help="A run folder written by `tb finetune` (its best weights are used).")]
CheckpointOpt = Annotated[Path | None, typer.Option(
    "--checkpoint", help="A model file instead of a run: model.safetensors, checkpoints/*.pt, "
                         "or an .onnx file from `tb export` (run by onnxruntime).")]
LoaderWorkersOpt = Annotated[int | None, typer.Option(
    "--workers", min=0, help="Image-decoding processes (default: none for a single batch, "
                             "else up to 4).", show_default=False)]
AmpOpt = Annotated[bool, typer.Option(
    "--amp", help="Mixed precision: float16 on CUDA, bfloat16 on the CPU and MPS.")]

DATA_PANEL = "Data"  # the help panel of the data options (finetune, evaluate, tune)
# A CSV table of paths and labels (finetune, evaluate, tune; `tb datasets pack` for its columns).
LabelsOpt = Annotated[Path | None, typer.Option(
    "--labels", metavar="FILE", help="A CSV of image paths and labels; its paths are relative "
                                     "to the --data folder.", rich_help_panel=DATA_PANEL)]
PathColumnOpt = Annotated[str | None, typer.Option(
    "--path-column", help="CSV column of image paths (default: the first column that names "
                          "existing files).", show_default=False, rich_help_panel=DATA_PANEL)]
LabelColumnOpt = Annotated[str | None, typer.Option(
    "--label-column", help="CSV column of labels (default: label).", show_default=False,
    rich_help_panel=DATA_PANEL)]
SplitColumnOpt = Annotated[str | None, typer.Option(
    "--split-column", help="CSV column of train/val per row, instead of --val-split.",
    rich_help_panel=DATA_PANEL)]
# Training data of other forms than a folder (finetune, tune).
ValDataOpt = Annotated[str | None, typer.Option(
    "--val-data", help="Validation data of its own: a folder, a CSV, or shards (a pattern "
                       "as --data takes).", rich_help_panel=DATA_PANEL)]
ShuffleBufferOpt = Annotated[int, typer.Option(
    "--shuffle-buffer", help="Shards: samples each loader worker mixes before yielding (0: "
                             "shard order only).", rich_help_panel=DATA_PANEL)]


def table_settings(*, labels: Path | None, path_column: str | None, label_column: str | None,
                   split_column: str | None) -> dict[str, str | None]:
    """The CSV options as run settings (absolute paths, so `--resume` works anywhere)."""
    return dict(labels=str(labels.resolve()) if labels else None, path_column=path_column,
                label_column=label_column, split_column=split_column)


def data_location(value: str | None) -> str | None:
    """`--data` / `--val-data` as a run setting: a local path made absolute (braces and globs
    kept), a URL or `pipe:` command as typed."""
    from toolbox.paths import is_remote

    if value is None or is_remote(value):
        return value
    return str(Path(value).resolve())


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """`--shard K/N` (0 <= K < N) as a tuple; a usage error otherwise (augment and pack)."""
    if value is None:
        return None
    index, _, count = value.partition("/")
    try:
        # isdecimal, not isdigit: '²' is a digit that int() refuses; int() also refuses
        # numbers over 4,300 digits (ValueError).
        shard = (int(index), int(count)) if (index.strip().isdecimal()
                                             and count.strip().isdecimal()) else None
    except ValueError:
        shard = None
    if shard is None or not 0 <= shard[0] < shard[1]:
        raise typer.BadParameter(f"{value!r} is not K/N with 0 <= K < N (e.g. 0/4)",
                                 param_hint="--shard")
    return shard


ForwardBatchOpt = Annotated[int, typer.Option(
    "--batch-size", min=1, help="Images per forward pass.")]
CamOpt = Annotated[str | None, typer.Option(
    "--cam", metavar="METHOD", help="Heat maps of where the model looked (grad-cam): gradcam, "
    "gradcam++, hirescam, xgradcam, layercam, eigencam, eigengradcam or scorecam.",
    show_default=False)]
CamLayerOpt = Annotated[str | None, typer.Option(
    "--cam-layer", metavar="NAME", help="The layer the heat map is read from, by its module "
    "name (default: the last spatial layer, e.g. layer4 of a ResNet).", show_default=False)]
