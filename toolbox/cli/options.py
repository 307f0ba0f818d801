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
ForwardBatchOpt = Annotated[int, typer.Option(
    "--batch-size", min=1, help="Images per forward pass.")]
CamOpt = Annotated[str | None, typer.Option(
    "--cam", metavar="METHOD", help="Heat maps of where the model looked (grad-cam): gradcam, "
    "gradcam++, hirescam, xgradcam, layercam, eigencam, eigengradcam or scorecam.",
    show_default=False)]
CamLayerOpt = Annotated[str | None, typer.Option(
    "--cam-layer", metavar="NAME", help="The layer the heat map is read from, by its module "
    "name (default: the last spatial layer, e.g. layer4 of a ResNet).", show_default=False)]
