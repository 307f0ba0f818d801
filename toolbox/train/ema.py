"""`--ema`: an exponential moving average of the weights (timm's ModelEmaV3, with warm-up), and
how an epoch's row records the averaged weights' validation beside the raw weights'."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn


class WeightEma:
    """The averaged copy of a model, updated after every optimizer step.

    The warm-up (timm's `use_warmup`) lets the decay grow from 0 towards `decay` (after 10 steps
    it is 0.80, after 100 0.95, after 1,000 0.99): at a fixed 0.9998 a short fine-tuning run of a
    few hundred steps would average mostly the start weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        from timm.utils import ModelEmaV3

        # Made from the unwrapped model (before DDP and torch.compile), as timm asks.
        self.ema = ModelEmaV3(model, decay=decay, use_warmup=True)
        self.ema.module.requires_grad_(False)
        self.steps = 0

    @property
    def module(self) -> nn.Module:
        """The averaged model (same architecture: validated and saved like the raw one)."""
        return self.ema.module

    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights (and BatchNorm statistics) into the average."""
        self.steps += 1
        self.ema.update(model, step=self.steps)

    def state_dict(self) -> dict[str, Any]:
        """Plain state for checkpoints (loaded with `weights_only=True`)."""
        return {"weights": self.ema.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved, so a resumed run goes on averaging where it was."""
        self.ema.module.load_state_dict(state["weights"])
        self.steps = int(state["steps"])


def best_of(row: Any) -> tuple[float, str]:
    """An epoch row's selection score and whose it is: the EMA weights' ("ema") when they
    validated better than the raw weights, else the raw weights' ("raw").

    A row names its score field in `SCORE` (val_acc1, val_miou) and holds the EMA figure in
    `ema_<SCORE>` (None without `--ema`).
    """
    raw, ema = getattr(row, row.SCORE), getattr(row, "ema_" + row.SCORE)
    return (ema, "ema") if ema is not None and ema > raw else (raw, "raw")


def with_ema(row: Any, ema_row: Any) -> Any:
    """`row` (the raw weights' epoch) with the EMA weights' validation loss and score beside
    it; its per-class figures become the EMA weights' when those are the better ones, so the
    result's per-class table describes the weights an improving epoch saves."""
    extra = {"ema_val_loss": ema_row.val_loss,
             "ema_" + row.SCORE: getattr(ema_row, row.SCORE)}
    if best_of(dataclasses.replace(row, **extra))[1] == "ema":
        extra.update({f.name: getattr(ema_row, f.name) for f in dataclasses.fields(row)
                      if f.name.startswith("per_class")})
    return dataclasses.replace(row, **extra)


def ema_columns(row_type: type) -> tuple[str, ...]:
    """metrics.csv's extra columns with `--ema`: the EMA weights' validation, and which weights
    an improving epoch saved."""
    return ("ema_val_loss", "ema_" + row_type.SCORE, "saved")


def ema_scalars(row: Any, score_tag: str) -> list[tuple[str, float]]:
    """The EMA weights' TensorBoard scalars of an epoch (`loss/val_ema`, `<score_tag>/val_ema`,
    e.g. `acc1/val_ema`); none without `--ema`."""
    if row.ema_val_loss is None:
        return []
    return [("loss/val_ema", row.ema_val_loss),
            (f"{score_tag}/val_ema", getattr(row, "ema_" + row.SCORE))]
