"""Command `log-images`: write images, grids or batches of images to TensorBoard."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from toolbox.cli import render
from toolbox.cli.errors import handle_errors
from toolbox.cli.options import JsonOpt, RootOpt


def _parse_size(text: str | None) -> tuple[int, int] | None:
    """'64' -> (64, 64); '96x64' (WIDTHxHEIGHT) -> (64, 96) as (height, width)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", text)
    if not match or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < 1):
        raise typer.BadParameter("use N (square) or WIDTHxHEIGHT, e.g. 64 or 96x64",
                                 param_hint="--size")
    width = int(match.group(1))
    height = int(match.group(2) or width)
    return height, width


@handle_errors
def log_images_command(
    tensorboard: Annotated[Path, typer.Option(
        "--tensorboard", "--logdir", help="TensorBoard log dir to write to (--logdir is an "
        "alias).", show_default=False)],
    src: Annotated[list[str] | None, typer.Argument(
        help="Image folder(s), file(s) or a quoted glob.", show_default=False)] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="Log samples of a fetched data set instead (see `tb datasets`).",
        show_default=False)] = None,
    root: RootOpt = None,
    split: Annotated[str, typer.Option("--split", help="Data set split: train or test.")
                     ] = "train",
    mode: Annotated[str, typer.Option(
        "--mode", help="grid: one make_grid image; batch: one add_images tensor; each: one "
        "add_image per file, tagged by its relative path.")] = "grid",
    tag: Annotated[str | None, typer.Option(
        "--tag", help="Tag (grid, batch) or tag prefix (each) (default: images, or "
        "DATASET/SPLIT).", show_default=False)] = None,
    step: Annotated[int, typer.Option("--step", help="Global step to log at.")] = 0,
    nrow: Annotated[int, typer.Option("--nrow", min=1, help="Images per grid row.")] = 8,
    padding: Annotated[int, typer.Option("--padding", min=0, help="Pixels between grid cells.")
                       ] = 2,
    size: Annotated[str | None, typer.Option(
        "--size", help="Fit every image into N or WIDTHxHEIGHT (aspect kept, black padding); "
        "grid/batch default: the first image's size.", show_default=False)] = None,
    max_images: Annotated[int | None, typer.Option(
        "--max", min=1, help="Use only the first N images (default: all files; 64 data set "
        "samples).", show_default=False)] = None,
    json_output: JsonOpt = False,
) -> None:
    """Log images to TensorBoard as one grid, one batch, or one entry per file.

    Grayscale images are shown as RGB; an alpha channel is dropped.

    For a grid or batch, images of mixed sizes are fitted into one (aspect kept, black padding).

    With --dataset, labels go into the tags (each) or into a text entry beside the grid/batch.

    Examples:
      tb log-images photos/ --tensorboard runs/look --nrow 6
      tb log-images 'shots/*.png' --tensorboard runs/look --mode each --tag shots
      tb log-images --dataset mnist --root data --max 32 --tensorboard runs/mnist
    """
    from toolbox.cli.progress import make_progress
    from toolbox.log_images import MODES, log_images

    if mode not in MODES:
        raise typer.BadParameter(f"choose one of: {', '.join(MODES)}", param_hint="--mode")
    if split not in ("train", "test"):
        raise typer.BadParameter("choose train or test", param_hint="--split")
    if src and dataset:
        raise typer.BadParameter("give image files or --dataset, not both", param_hint="SRC")
    if not src and not dataset:
        raise typer.BadParameter("give image files, a folder or a glob (or --dataset NAME)",
                                 param_hint="SRC")
    result = log_images(
        logdir=tensorboard, src=src or None, dataset=dataset, root=root, split=split, mode=mode,
        tag=tag, step=step, nrow=nrow, padding=padding, size=_parse_size(size),
        max_images=max_images, progress=make_progress(not json_output))
    if json_output:
        render.print_json(result)
        return
    shown = result.written[:20]
    render.stdout.print(f"wrote {result.images} image(s) from {result.source} to "
                        f"{result.logdir} (mode {result.mode}):", markup=False, soft_wrap=True)
    render.show(render.table(
        None, ["tag", "step", "width", "height", "images"],
        [(w.tag, w.step, w.width, w.height, w.images) for w in shown],
        caption=(f"... and {len(result.written) - len(shown)} more"
                 if len(result.written) > len(shown) else None),
        right=("step", "width", "height", "images")))
    for skipped in result.skipped:
        render.warn(f"skipped {skipped.path}: {skipped.reason}")
    render.stdout.print(f"view it: {result.tensorboard_command}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Mount this module's commands on the root app."""
    app.command("log-images")(log_images_command)
