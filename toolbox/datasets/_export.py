"""A fetched data set written out as folders: an ImageFolder tree of PNGs, or segmentation
canvases of MNIST-family images (`tb datasets fetch --export-folder / --export-segmentation`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolbox.datasets._loader import SPLITS, open_dataset
from toolbox.errors import UsageError
from toolbox.fileio import atomic_folder
from toolbox.images import write_image
from toolbox.progress import NullProgress, Progress

if TYPE_CHECKING:
    from toolbox.datasets._registry import DatasetInfo
    from toolbox.segment.canvas import CanvasExport


@dataclass
class ExportResult:
    """An ImageFolder tree written from a data set."""

    dest: Path
    classes: list[str]
    counts: dict[str, int]  # images per split


def _folder_name(label: str) -> str:
    """A class name as a folder name ('T-shirt/top' -> 'T-shirt_top')."""
    return re.sub(r"[\\/:*?\"<>|\x00-\x1f]", "_", label).strip(" .") or "_"


def export_image_folder(*, name: str, root: Path, dest: Path, max_per_split: int | None = None,
                        progress: Progress | None = None) -> ExportResult:
    """Write a fetched data set as `dest/{train,test}/<class>/<index>.png` (an ImageFolder tree).

    The tree is built in a hidden folder beside `dest` and renamed onto it at the end, so an
    interrupted export never looks like a complete one.

    Raises:
        ToolboxError: `dest` exists and is not empty (nothing is overwritten), or the data set
            is not fetched.
    """
    progress = progress or NullProgress()
    dest = Path(dest)
    opened = {split: open_dataset(name, root, split) for split in SPLITS}
    classes = opened["train"].classes
    folders = [_folder_name(c) for c in classes]
    if len(set(folders)) != len(folders):
        folders = [f"{i:03d}_{f}" for i, f in enumerate(folders)]
    counts = {}
    with atomic_folder(dest) as stage:
        for split, ds in opened.items():
            total = len(ds) if max_per_split is None else min(len(ds), max_per_split)
            progress.start(f"export {name} {split}", total, unit="images")
            for i in range(total):
                image, label = ds[i]
                write_image(stage / split / folders[label] / f"{i:05d}.png", image)
                progress.advance()
            progress.finish()
            counts[split] = total
    return ExportResult(dest, folders, counts)


SEGMENTATION_TRAIN, SEGMENTATION_VAL = 2000, 500  # default canvases per split


def export_segmentation_canvases(info: DatasetInfo, root: Path, dest: Path, *,
                                 count: int | None, binary: bool, size: int, seed: int,
                                 progress: Progress) -> CanvasExport:
    """`--export-segmentation`: canvases of the train images as train/, of the test images as
    val/ (`count` training canvases, a quarter as many for validation; default 2,000 and 500).

    Raises:
        ToolboxError: a data set whose images are not objects on black (not the MNIST family).
    """
    from toolbox.segment.canvas import export_canvases

    if info.loader != "mnist":
        raise UsageError(f"--export-segmentation needs objects on a black background; "
                           f"{info.name} is not of the MNIST family",
                           "use fashion-mnist, mnist or kmnist")
    train_count = count or SEGMENTATION_TRAIN
    counts = {"train": train_count,
              "val": max(1, train_count // 4) if count else SEGMENTATION_VAL}
    sources = {"train": open_dataset(info.name, root, "train"),
               "val": open_dataset(info.name, root, "test")}
    return export_canvases(splits=sources, classes=sources["train"].classes, dest=dest,
                           counts=counts, size=size, binary=binary, seed=seed,
                           progress=progress)
