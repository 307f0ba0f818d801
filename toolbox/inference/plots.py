"""Evaluation pictures rendered off-screen with matplotlib's Agg canvas: the confusion matrix and
the reliability diagram."""

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


def reliability_image(bins: list, ece: float, title: str = "", calibrated: list | None = None,
                      calibrated_ece: float | None = None) -> np.ndarray:
    """A reliability diagram as an (H, W, 3) uint8 image: per confidence bin, the accuracy
    (bars) against the mean confidence (the diagonal is perfect calibration), and how many
    predictions fall in each bin below it. `bins` are `ReliabilityBin`s; `calibrated` the same
    after temperature scaling, drawn as an outline."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 7.0), dpi=100)
    canvas = FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    lefts = [b.lower for b in bins]
    width = bins[0].upper - bins[0].lower
    filled = [b for b in bins if b.count]
    top.bar([b.lower for b in filled], [b.accuracy for b in filled], width=width, align="edge",
            color="#4c72b0", edgecolor="white", label=f"accuracy (ECE {ece:.2%})")
    gaps = [(b.lower, b.confidence, b.accuracy) for b in bins if b.count]
    for n, (left, conf, acc) in enumerate(gaps):
        top.plot([left + width / 2] * 2, [acc, conf], color="#c44e52", linewidth=2,
                 label="gap to the mean confidence" if n == 0 else None)
    if calibrated is not None:
        shown = [b for b in calibrated if b.count]
        top.bar([b.lower for b in shown], [b.accuracy for b in shown],
                width=width, align="edge", fill=False, edgecolor="#dd8452", linewidth=1.5,
                label=f"after temperature scaling (ECE {calibrated_ece:.2%})")
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    if title:
        top.set_title(title)
    bottom.bar(lefts, [b.count for b in bins], width=width, align="edge", color="#8c8c8c",
               edgecolor="white")
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("predictions")
    fig.tight_layout()
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[:, :, :3])
