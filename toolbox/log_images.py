"""`tb log-images`: put images (files, folders, globs or a fetched data set) into TensorBoard.

Modes: "grid" tiles everything into one image with `torchvision.utils.make_grid`; "batch" logs
one `add_images` tensor (TensorBoard tiles it itself, 8 per row, no padding); "each" logs one
`add_image` per file, tagged by its relative path (or index and label for a data set).

Sizes: a grid or a batch needs one size, so each image is resized to fit inside it (keeping its
aspect ratio) and padded with black (`toolbox.tensorboard.fit_to_size`); the size is `size`, else
the first image's. In "each" mode images keep their own size unless `size` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolbox.errors import ToolboxError, UsageError
from toolbox.images import ImageFile, ImageReadError, collect_images, not_an_image, read_image
from toolbox.progress import NullProgress, Progress
from toolbox.sources import SkippedFile
from toolbox.tensorboard import (
    add_image,
    fit_to_size,
    image_grid,
    summary_writer,
    tensorboard_command,
)

MODES = ("grid", "batch", "each")
DATASET_DEFAULT_MAX = 64
BATCH_COLUMNS = 8  # what TensorBoard's add_images uses to tile a batch


@dataclass
class WrittenImage:
    """One image entry written to the event file."""

    tag: str
    step: int
    width: int
    height: int
    images: int  # source images it shows
    labels: list[str] = field(default_factory=list)


@dataclass
class LogImagesResult:
    """What `log_images` wrote."""

    logdir: Path
    mode: str
    source: str
    images: int
    written: list[WrittenImage]
    skipped: list[SkippedFile]
    tensorboard_command: str


@dataclass
class _Item:
    image: np.ndarray
    name: str  # relative path, or index_label for a data set
    label: str | None = None


def _collect(sources: list[str | Path], skipped: list[SkippedFile]
             ) -> list[tuple[Path, str]]:
    """(path, name) of every image in `sources`; names are paths relative to their folder (or
    glob root), prefixed with the folder's name when several folders are given. Files that are
    not images go to `skipped`, with the reason."""
    files: list[tuple[Path, str]] = []
    for src in sources:
        others: list[ImageFile] = []
        found = collect_images(src, others)
        prefix = ""
        if len(sources) > 1 and Path(src).is_dir():
            prefix = f"{Path(src).resolve().name}/"
        files.extend((f.path, prefix + f.relative.as_posix()) for f in found)
        skipped += [SkippedFile(prefix + o.relative.as_posix(), not_an_image(o.relative))
                    for o in others]
    return files


def _from_files(sources: list[str | Path], max_images: int | None, progress: Progress
                ) -> tuple[list[_Item], list[SkippedFile]]:
    skipped: list[SkippedFile] = []
    files = _collect(sources, skipped)
    shown = ", ".join(map(str, sources))
    if not files:
        raise ToolboxError(f"no images found in {shown}",
                           "pass an image folder, image files, or a quoted glob like 'imgs/*.png'")
    items = []
    progress.start("reading images", min(len(files), max_images or len(files)))
    for path, name in files:
        if max_images is not None and len(items) >= max_images:
            break
        try:
            items.append(_Item(read_image(path), name))
            progress.advance()
        except ImageReadError as exc:
            skipped.append(SkippedFile(name, exc.reason))
    progress.finish()
    if not items:
        raise ToolboxError(f"none of the {len(files)} files in {shown} could be read as images",
                           f"first problem: {skipped[0].path}: {skipped[0].reason}")
    return items, skipped


def _from_dataset(name: str, root: Path | None, split: str, max_images: int | None
                  ) -> list[_Item]:
    from toolbox.datasets import default_root, open_dataset

    ds = open_dataset(name, root or default_root(), split)
    count = min(len(ds), max_images or DATASET_DEFAULT_MAX)
    items = []
    for i in range(count):
        image, label = ds[i]
        label_name = ds.classes[label] if 0 <= label < len(ds.classes) else str(label)
        items.append(_Item(image, f"{i:05d}_{label_name.replace('/', '_')}", label_name))
    return items


def log_images(*, logdir: Path, src: str | Path | Sequence[str | Path] | None = None,
               dataset: str | None = None,
               root: Path | None = None, split: str = "train", mode: str = "grid",
               tag: str | None = None, step: int = 0, nrow: int = 8, padding: int = 2,
               size: tuple[int, int] | None = None, max_images: int | None = None,
               progress: Progress | None = None) -> LogImagesResult:
    """Write images to a TensorBoard event file in `logdir`.

    Args:
        logdir: TensorBoard log dir (created if needed).
        src: image folders (recursive), files or globs (one or a list); or else `dataset`.
        dataset: a fetched data set name (with `root` and `split`); labels go into the tags.
        mode: "grid", "batch" or "each" (see the module docstring).
        tag: the tag (grid, batch) or tag prefix (each); default "images", or
            "DATASET/SPLIT" for a data set.
        size: (height, width) every image is fitted to; see the module docstring.
        max_images: use only the first N images (default: all files; 64 data set samples).

    Raises:
        ToolboxError: no source or two, unknown mode, nothing readable, data set not fetched.
    """
    progress = progress or NullProgress()
    if (src is None) == (dataset is None):
        raise UsageError("give either image files (SRC) or --dataset, not both or neither",
                           "e.g. tb log-images photos/ --tensorboard runs/x")
    if mode not in MODES:
        from toolbox.errors import unknown_name

        raise unknown_name("mode", mode, MODES, param="--mode")
    if max_images is not None and max_images < 1:
        raise UsageError("--max must be at least 1")
    skipped: list[SkippedFile] = []
    if dataset is not None:
        items = _from_dataset(dataset, root, split, max_images)
        source = f"{dataset} ({split})"
        base_tag = tag or f"{dataset}/{split}"
    else:
        sources = [src] if isinstance(src, str | Path) else list(src)
        if not sources:
            raise ToolboxError("no image files given", "pass a folder, files or a glob")
        items, skipped = _from_files(sources, max_images, progress)
        source = ", ".join(map(str, sources))
        base_tag = tag or "images"
    labels = [it.label for it in items if it.label is not None]
    written: list[WrittenImage] = []
    logdir = Path(logdir)
    with summary_writer(logdir) as writer:
        if mode == "grid":
            grid = image_grid([it.image for it in items], nrow=nrow, padding=padding, size=size)
            add_image(writer, base_tag, grid, step=step)
            written.append(WrittenImage(base_tag, step, grid.shape[1], grid.shape[0],
                                        len(items), labels))
        elif mode == "batch":
            target = size or items[0].image.shape[:2]
            batch = np.stack([fit_to_size(it.image, target) for it in items])
            writer.add_images(base_tag, batch, global_step=step, dataformats="NHWC")
            cols = min(len(items), BATCH_COLUMNS)
            rows = -(-len(items) // cols)
            written.append(WrittenImage(base_tag, step, cols * target[1], rows * target[0],
                                        len(items), labels))
        else:
            progress.start("logging images", len(items))
            for it in items:
                image = fit_to_size(it.image, size) if size else it.image
                item_tag = f"{base_tag}/{it.name}" if tag or dataset else it.name
                add_image(writer, item_tag, image, step=step)
                written.append(WrittenImage(item_tag, step, image.shape[1], image.shape[0], 1,
                                            [it.label] if it.label else []))
                progress.advance()
            progress.finish()
        if labels and mode != "each":
            # A grid or batch is one image; its labels, in reading order, go beside it as text.
            rows = [labels[i:i + (nrow if mode == "grid" else BATCH_COLUMNS)]
                    for i in range(0, len(labels), nrow if mode == "grid" else BATCH_COLUMNS)]
            text = "\n\n".join(" | ".join(r) for r in rows)
            writer.add_text(f"{base_tag}/labels", text, global_step=step)
    return LogImagesResult(logdir, mode, source, len(items), written, skipped,
                           tensorboard_command(logdir))
