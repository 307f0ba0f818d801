"""The results tables of `tb finetune`: epochs (with the EMA column under --ema) and the
segmentation report; `cli.finetune` shows them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolbox.cli import render

if TYPE_CHECKING:
    from toolbox.train import FinetuneResult
    from toolbox.train.segment import SegmentResult


def pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}%"  # NaN: a class with no val images


def with_ema(columns: list[str], rows: list[tuple], epochs: list, after: str
              ) -> tuple[list[str], list[tuple]]:
    """The results table with an "EMA <score>" column after `after` when the run had --ema."""
    if not epochs or epochs[0].ema_val_loss is None:
        return columns, rows
    at = columns.index(after) + 1
    name = "EMA mIoU" if hasattr(epochs[0], "val_miou") else "EMA acc"
    scores = [pct(getattr(r, "ema_" + r.SCORE)) for r in epochs]
    return ([*columns[:at], name, *columns[at:]],
            [(*row[:at], score, *row[at:]) for row, score in zip(rows, scores, strict=True)])


def kept(result: FinetuneResult) -> str:
    """Which weights the model file holds, when --ema made it a choice."""
    return "its EMA weights " if result.best_weights == "ema" else ""


def show_segment_result(result: SegmentResult) -> None:
    columns = ["epoch", "train loss", "val loss", "pixel acc", "mIoU", "Dice", "lr", "img/s",
               "time"]
    rows = [(r.epoch, f"{r.train_loss:.3f}", f"{r.val_loss:.3f}", pct(r.val_pixel_acc),
             pct(r.val_miou), pct(r.val_dice), f"{r.lr:.2g}", f"{r.images_per_s:.0f}",
             f"{r.epoch_time_s:.1f}s") for r in result.epochs]
    columns, rows = with_ema(columns, rows, result.epochs, after="mIoU")
    table = render.table(None, columns, rows, right=columns)
    table.show_edge = table.pad_edge = False
    render.show(table)
    per_class = [(name, pct(iou), pct(result.per_class_dice.get(name, float("nan"))))
                 for name, iou in result.per_class_acc.items()]
    render.show(render.table(None, ["class", "val IoU", "val Dice"], per_class,
                             right=["val IoU", "val Dice"]))
    render.stdout.print(f"val mIoU {pct(result.best_val_miou)}, Dice "
                        f"{pct(result.best_val_dice)} (best epoch {result.best_epoch}, "
                        f"{kept(result)}saved as {result.model_file})")
