"""The confusion matrix as a picture, rendered off-screen with matplotlib's Agg canvas."""

from __future__ import annotations

import numpy as np

# Above this many classes the cell counts would be unreadable, so only colours are drawn.
_ANNOTATE_MAX = 30


def confusion_image(matrix: np.ndarray, names: list[str], title: str = "") -> np.ndarray:
    """Render `matrix` (rows: true, columns: predicted) as an (H, W, 3) uint8 image.

    Cells are coloured by the row-normalised rate (the recall of each true class), so classes
    with few samples are as visible as large ones; the raw counts are written in the cells.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    n = len(names)
    rows = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    side = min(4.0 + 0.45 * n, 40.0)
    fig = Figure(figsize=(side + 1.5, side), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, labels=names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    if n <= _ANNOTATE_MAX:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[:, :, :3])
