"""A segmentation data set made from a classification one: objects pasted onto blank canvases.

Each canvas (e.g. 96x96) holds 1 to 4 real images of a black-background data set (Fashion-MNIST
and the MNIST family) at random, non-overlapping places. The mask is the object's class + 1 where
the object's pixel is not black, 0 (background) elsewhere; `binary` writes 1 for every object.
The same seed gives the same canvases, byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolbox.errors import UsageError
from toolbox.fileio import atomic_folder, atomic_write_text
from toolbox.images import write_image
from toolbox.progress import NullProgress, Progress
from toolbox.segment.data import BINARY_CLASSES, CLASSES_FILE, IMAGES_DIR, MASKS_DIR
from toolbox.segment.overlay import write_palette_png

MAX_OBJECTS = 4
PLACEMENT_TRIES = 50


@dataclass
class CanvasExport:
    """A segmentation folder written by `export_canvases`."""

    dest: Path
    classes: list[str]
    counts: dict[str, int]  # canvases per split
    size: int
    binary: bool


def _place(rng: np.random.Generator, size: int, obj: int, count: int
           ) -> list[tuple[int, int]]:
    """Up to `count` top-left corners of `obj`-sized squares that do not overlap."""
    corners: list[tuple[int, int]] = []
    for _ in range(PLACEMENT_TRIES):
        if len(corners) == count:
            break
        y, x = (int(v) for v in rng.integers(0, size - obj + 1, size=2))
        if all(abs(y - cy) >= obj or abs(x - cx) >= obj for cy, cx in corners):
            corners.append((y, x))
    return corners


def make_canvas(rng: np.random.Generator, source: Any, size: int, binary: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size) grayscale canvas and its mask from random samples of `source`."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    first, _ = source[0]
    obj = first.shape[0]
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    for y, x in _place(rng, size, obj, count):
        image, label = source[int(rng.integers(0, len(source)))]
        gray = image[:, :, 0]
        canvas[y:y + obj, x:x + obj] = gray
        mask[y:y + obj, x:x + obj][gray > 0] = 1 if binary else label + 1
    return canvas, mask


def export_canvases(*, splits: dict[str, Any], classes: Sequence[str], dest: Path,
                    counts: dict[str, int], size: int = 96, binary: bool = False, seed: int = 0,
                    progress: Progress | None = None) -> CanvasExport:
    """Write `dest/<split>/images/NNNNN.png` and `dest/<split>/masks/NNNNN.png` (palette PNGs)
    and `dest/classes.txt`, built in a hidden folder and renamed into place at the end.

    Args:
        splits: output split name -> a source of ((H, W, 3) uint8, label) samples.
        counts: canvases to write per output split.

    Raises:
        ToolboxError: `dest` exists and is not empty, or the canvas is smaller than an object.
    """
    progress = progress or NullProgress()
    obj = next(iter(splits.values()))[0][0].shape[0]
    if size < obj:
        raise UsageError(f"--canvas-size {size} is smaller than one image ({obj} px)")
    names = list(BINARY_CLASSES) if binary else ["background", *classes]
    with atomic_folder(dest) as stage:
        for index, (split, source) in enumerate(splits.items()):
            rng = np.random.default_rng([seed, index])  # each split reproducible on its own
            progress.start(f"segmentation canvases {split}", counts[split], unit="images")
            for i in range(counts[split]):
                canvas, mask = make_canvas(rng, source, size, binary)
                write_image(stage / split / IMAGES_DIR / f"{i:05d}.png", canvas)
                write_palette_png(stage / split / MASKS_DIR / f"{i:05d}.png", mask)
                progress.advance()
            progress.finish()
        atomic_write_text(stage / CLASSES_FILE, "\n".join(names) + "\n")
    return CanvasExport(dest, names, dict(counts), size, binary)
