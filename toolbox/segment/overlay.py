"""Colours for class masks: the palette, palette PNGs, coloured masks and image overlays."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from toolbox.fileio import atomic_path
from toolbox.segment.losses import IGNORE_INDEX


@functools.lru_cache(maxsize=1)
def palette() -> np.ndarray:
    """(256, 3) uint8 colours: Pascal VOC's bit-interleaved palette (background black,
    distinct colours after it), with 255 = ignore in white, as VOC masks show it."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours[index] = (r, g, b)
    colours[IGNORE_INDEX] = (255, 255, 255)
    colours.flags.writeable = False  # shared by every caller
    return colours


def colorize(mask: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 in the palette's colours."""
    return palette()[np.asarray(mask, dtype=np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with the coloured mask blended over it (background pixels left as they are)."""
    image = np.asarray(image, dtype=np.float32)
    colours = colorize(mask).astype(np.float32)
    shown = (np.asarray(mask) != 0)[..., None]
    blended = np.where(shown, (1 - alpha) * image + alpha * colours, image)
    return np.clip(blended.round(), 0, 255).astype(np.uint8)


def write_palette_png(dest: str | Path, mask: np.ndarray) -> Path:
    """Write class indices as a palette PNG (mode P): the values are the classes, and every
    image viewer shows them in colour. Written atomically."""
    from PIL import Image

    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(palette().reshape(-1).tolist())
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        image.save(tmp, format="PNG")
    return dest
