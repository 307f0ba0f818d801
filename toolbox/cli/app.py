"""The root `tb` program: global options, and one mounted module per command group."""

from __future__ import annotations

import gc
from typing import Annotated

import typer

from toolbox import __version__
from toolbox.cli import (
    augment,
    benchmark,
    datasets,
    export,
    finetune,
    log_images,
    models,
    predict,
    summary,
)
from toolbox.cli.errors import set_debug
from toolbox.cli.help import adopt

app = typer.Typer(
    name="tb",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

for module in (models, summary, augment, finetune, log_images, datasets, predict, export,
               benchmark):
    module.register(app)
adopt(app)  # the house --help for every command registered above


def _versions() -> str:
    import timm
    import torch
    import torchvision

    return (f"tb {__version__}\ntorch {torch.__version__}\n"
            f"torchvision {torchvision.__version__}\ntimm {timm.__version__}")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(_versions())
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version_callback, is_eager=True,
        help="Show the versions of tb, torch, torchvision and timm.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show full tracebacks on errors (or set TB_DEBUG=1).")] = False,
) -> None:
    """tb: everyday chores of PyTorch vision work, from the command line.

    `tb COMMAND --help` explains each command, with examples.

    Examples:
      tb models list --filter resnet          # find an architecture
      tb augment imgs/ aug/ --preset light    # augment a folder of images
      tb finetune --data photos/ --freeze     # fine-tune on your classes
      tb predict photos/ --run runs/NAME      # classify with what you trained
    """
    set_debug(debug)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        # Everything the command made lives until the process ends anyway. Frozen, Python's
        # shutdown does not walk it again: with torch, timm and torch._dynamo loaded that walk
        # took 2 s, 6% of a one-epoch `tb finetune` on 2 cores.
        gc.freeze()
