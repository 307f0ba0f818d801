"""Which images the model gets most wrong: the highest-loss samples, the most-confused class
pairs, and a grid of captioned panels to show them (fastai's `plot_top_losses` and
`most_confused`, drawn with PIL so the pictures need no display)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_TOP_LOSSES = 16
PANEL = 160  # side of one image in a grid, in pixels
LINE = 15  # caption line height
GAP = 4  # white space between panels
RIGHT = (40, 110, 40)  # caption band of a right prediction
WRONG = (150, 30, 30)  # ... and of a wrong one
NEUTRAL = (60, 60, 60)  # ... and of a panel that is neither (a segmentation)
TEXT = (255, 255, 255)


@dataclass(frozen=True)
class ConfusedPair:
    """`count` images of class `true` predicted as `predicted`."""

    true: str
    predicted: str
    count: int


def most_confused(matrix: np.ndarray, names: Sequence[str], limit: int = 10
                  ) -> list[ConfusedPair]:
    """The off-diagonal cells of a confusion matrix (rows true, columns predicted), largest
    first (ties in class order), at most `limit` of them; pairs never confused are left out."""
    matrix = np.asarray(matrix)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    order = sorted(zip(rows.tolist(), cols.tolist(), strict=True),
                   key=lambda rc: (-int(off[rc]), rc))
    return [ConfusedPair(names[r], names[c], int(off[r, c])) for r, c in order[:limit]]


def highest(losses: np.ndarray, k: int) -> list[int]:
    """Positions of the `k` largest losses, largest first (ties: earlier position first); all
    of them when there are fewer than `k`."""
    losses = np.asarray(losses, dtype=np.float64)
    order = np.lexsort((np.arange(losses.size), -losses))
    return [int(i) for i in order[:max(0, k)]]


@dataclass(frozen=True)
class TopLoss:
    """One of the highest-loss images: what it is, what was predicted, and how sure."""

    rank: int  # 1 = the highest loss
    file: str
    true: str
    predicted: str
    prob: float  # probability of the predicted class
    true_prob: float  # probability given to the true class
    loss: float  # cross-entropy, -log(true_prob)
    cam: str | None = None  # the heat-map overlay PNG, with --cam


def loss_caption(item: TopLoss) -> list[str]:
    """The lines drawn under a top-loss panel."""
    return [f"true: {item.true}", f"pred: {item.predicted} {item.prob:.0%}",
            f"loss {item.loss:.2f}  p(true) {item.true_prob:.0%}"]


@dataclass(frozen=True)
class PanelGrid:
    """A grid picture and where each panel's image and caption lie, as (top, left, bottom,
    right) pixel boxes, so a test (or a later overlay) can find them."""

    image: np.ndarray  # (H, W, 3) uint8
    images: list[tuple[int, int, int, int]]
    captions: list[tuple[int, int, int, int]]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    """`text` cut with an ellipsis so that it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def panel_grid(panels: Sequence[np.ndarray], captions: Sequence[Sequence[str]],
               right: Sequence[bool] | None = None, *, columns: int | None = None,
               panel: int = PANEL) -> PanelGrid:
    """Lay out (H, W, 3) images in a grid, each fitted into a `panel`-wide cell (aspect kept,
    small images enlarged) above a band with its caption lines: green where `right` says the
    prediction was right, red where wrong, grey without `right`.

    Raises:
        ValueError: no panels, or captions/`right` of another length.
    """
    from PIL import Image, ImageDraw

    from toolbox.tensorboard import fit_to_size

    if not panels:
        raise ValueError("no panels to draw")
    if len(captions) != len(panels) or (right is not None and len(right) != len(panels)):
        raise ValueError("one caption (and one right/wrong flag) per panel")
    count = len(panels)
    columns = columns or min(count, max(1, math.ceil(math.sqrt(count))), 8)
    rows = math.ceil(count / columns)
    lines = max(len(c) for c in captions)
    widths = [panel * p.shape[1] // p.shape[0] if p.shape[0] else panel for p in panels]
    cell_w = max(panel, min(max(widths), 3 * panel))  # side-by-side panels stay wide
    cell_h = panel + lines * LINE + 4
    canvas = Image.new("RGB", (columns * cell_w + (columns + 1) * GAP,
                               rows * cell_h + (rows + 1) * GAP), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(LINE - 3)
    image_boxes, caption_boxes = [], []
    for i, (picture, lines_i) in enumerate(zip(panels, captions, strict=True)):
        top = GAP + (i // columns) * (cell_h + GAP)
        left = GAP + (i % columns) * (cell_w + GAP)
        fitted = fit_to_size(np.ascontiguousarray(picture, dtype=np.uint8), (panel, cell_w))
        canvas.paste(Image.fromarray(fitted), (left, top))
        band = (left, top + panel, left + cell_w, top + cell_h)
        colour = NEUTRAL if right is None else RIGHT if right[i] else WRONG
        draw.rectangle([band[0], band[1], band[2] - 1, band[3] - 1], fill=colour)
        for n, text in enumerate(lines_i):
            draw.text((left + 3, top + panel + 2 + n * LINE),
                      _fit(draw, text, font, cell_w - 6), fill=TEXT, font=font)
        image_boxes.append((top, left, top + panel, left + cell_w))
        caption_boxes.append((band[1], band[0], band[3], band[2]))
    return PanelGrid(np.asarray(canvas, dtype=np.uint8).copy(), image_boxes, caption_boxes)
