"""A fine-tuning run's TensorBoard log: the model graph, the first batch, per-epoch scalars and
the hyper-parameters. Only rank 0 writes; on the other ranks every call does nothing."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolbox.progress import Progress
from toolbox.train.config import FinetuneConfig
from toolbox.train.ema import ema_scalars
from toolbox.train.results import EpochRow

GRID_IMAGES = 32
HPARAM_KEYS = ("model", "pretrained", "freeze", "epochs", "batch_size", "lr", "weight_decay",
               "opt", "sched", "loss", "amp", "img_size", "augment", "seed")


class RunLog:
    """Writes one run's TensorBoard events (no-ops without a writer)."""

    def __init__(self, writer: Any, progress: Progress) -> None:
        self.writer = writer
        self.progress = progress

    def graph(self, model: nn.Module, input_size: tuple[int, ...], device: torch.device) -> None:
        if self.writer is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                example = torch.zeros((1, *input_size), device=device)
                model.eval()
                # Traced here without `check_trace`: add_graph's own trace re-traces and runs
                # the model twice more to check it, 4x the CPU time (2.2 s against 0.5 s for
                # resnet18 at 64 px), for the same GraphDef. add_graph takes a traced module
                # as it is.
                traced = torch.jit.trace(model, example, check_trace=False)
                self.writer.add_graph(traced, example)
            except Exception as exc:  # tracing fails for some architectures; not fatal
                self.progress.note(f"model graph not logged: {type(exc).__name__}")

    def grid(self, batch: torch.Tensor, epoch: int) -> None:
        """The first training batch as a grid, as the model sees it (before normalising)."""
        from toolbox.tensorboard import add_image, image_grid

        images = [img.permute(1, 2, 0).numpy() for img in batch[:GRID_IMAGES].cpu()]
        if images and images[0].shape[2] == 1:
            images = [img.repeat(3, axis=2) for img in images]
        add_image(self.writer, "train/images", image_grid(images, nrow=8), epoch)

    def epoch(self, row: EpochRow, lrs: dict[str, float]) -> None:
        if self.writer is None:
            return
        for tag, value in (("loss/train", row.train_loss), ("loss/val", row.val_loss),
                           ("acc1/train", row.train_acc1), ("acc1/val", row.val_acc1),
                           ("acc5/val", row.val_acc5), ("throughput/images_per_s",
                                                        row.images_per_s),
                           *ema_scalars(row, "acc1")):
            self.writer.add_scalar(tag, value, row.epoch)
        for name, lr in lrs.items():
            self.writer.add_scalar(f"lr/{name}", lr, row.epoch)
        self.writer.flush()

    def hparams(self, cfg: FinetuneConfig, best_acc1: float, epoch: int) -> None:
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        hp = {k: (v if isinstance(v, int | float | str | bool) else str(v))
              for k, v in cfg.to_dict().items() if k in HPARAM_KEYS}
        # Written into this run's own event file (add_hparams would make a sub-folder).
        for summary in hparams(hp, {"hparam/best_val_acc1": best_acc1}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_scalar("hparam/best_val_acc1", best_acc1, epoch)
        self.writer.flush()


@contextlib.contextmanager
def open_run_log(run_dir: Path, is_main: bool, progress: Progress) -> Iterator[RunLog]:
    """The run's log, its event file in `run_dir` (rank 0 only)."""
    if not is_main:
        yield RunLog(None, progress)
        return
    from toolbox.tensorboard import summary_writer

    with summary_writer(run_dir) as writer:
        yield RunLog(writer, progress)
