"""Training checkpoints: the state they hold, written atomically (last, best, the model file),
read back with `weights_only=True` for `--resume`."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolbox.errors import ToolboxError
from toolbox.fileio import atomic_path
from toolbox.models import ModelMeta, save_safetensors, torch_load
from toolbox.runs import BEST_CHECKPOINT, LAST_CHECKPOINT, MODEL_FILE, checkpoint_path
from toolbox.train.config import FinetuneConfig
from toolbox.train.results import EpochRow

REQUIRED_KEYS = ("model", "optimizer", "epoch", "args", "meta")


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """`torch.save` to a temporary file, then rename: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def resume_file(run_or_checkpoint: str | Path) -> Path:
    """The checkpoint `--resume` means: a file as given, or a run folder's `checkpoints/last.pt`.

    Raises:
        ToolboxError: the path does not exist or holds no run.
    """
    path = Path(run_or_checkpoint)
    if path.is_file():
        return path
    if path.is_dir():
        last = checkpoint_path(path, LAST_CHECKPOINT)
        if last.is_file():
            return last
        raise ToolboxError(f"{path} holds no run to resume: no {last.relative_to(path)}",
                           "pass the folder `tb finetune` wrote (its --out) or a .pt checkpoint")
    raise ToolboxError(f"no such run folder or checkpoint: {path}", "check the --resume path")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint as written by `save_checkpoint`.

    Raises:
        ToolboxError: unreadable, or a weights-only file rather than a training checkpoint.
    """
    state = torch_load(path, "checkpoint", "pass a checkpoints/last.pt written by `tb finetune`")
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise ToolboxError(f"{path} is not a tb training checkpoint (no optimizer state)",
                           "use --weights for model files; --resume takes a run folder")
    return state


def row_dict(row: EpochRow) -> dict[str, Any]:
    """An epoch row as plain values (checkpoints are loaded with `weights_only=True`)."""
    return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}


@dataclass
class TrainState:
    """Everything a checkpoint holds, and the one place that knows its format: `to_dict` writes
    it, `restore` reads it back for `--resume` (timm's `resume_checkpoint`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any  # an LrSchedule
    scaler: Any  # a GradScaler, or None
    device: torch.device
    cfg: FinetuneConfig
    meta: ModelMeta
    classes: list[str]
    epoch: int = 0  # completed epochs
    history: list[EpochRow] = field(default_factory=list)
    best_acc1: float = -1.0  # the best epoch's score: top-1, or mIoU when segmenting
    best_epoch: int = 0
    row_type: type = EpochRow  # the task's epoch row (segmentation has its own)
    ema: Any = None  # a WeightEma with --ema
    best_weights: str = "raw"  # which weights the best epoch saved: "raw" or "ema"

    def to_dict(self, interrupted: bool = False) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "epoch": self.epoch, "class_names": list(self.classes),
            "args": self.cfg.to_dict(), "meta": self.meta.to_dict(),
            "history": [row_dict(r) for r in self.history],
            "best_acc1": self.best_acc1, "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "rng": torch.get_rng_state(), "interrupted": interrupted,
            "cuda_rng": (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                         else None),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Optimizer, schedule, scaler, EMA, random state and history (the model is loaded
        earlier, by `load_model_state`, before the optimizer is built over its parameters). A
        run resumed with `--ema` that had none starts its average from the restored weights."""
        self.optimizer.load_state_dict(saved["optimizer"])
        if saved.get("scheduler"):
            self.schedule.load_state_dict(saved["scheduler"])
        if self.ema is not None and saved.get("ema"):
            self.ema.load_state_dict(saved["ema"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        if isinstance(saved.get("rng"), torch.Tensor):
            torch.set_rng_state(saved["rng"])
        if self.device.type == "cuda" and isinstance(saved.get("cuda_rng"), torch.Tensor):
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
        self.epoch = int(saved["epoch"])
        self.history = [self.row_type(**row) for row in saved.get("history", [])]
        self.best_acc1 = float(saved.get("best_acc1", -1.0))
        self.best_epoch = int(saved.get("best_epoch", 0))
        self.best_weights = str(saved.get("best_weights", "raw"))

    @property
    def best_model(self) -> nn.Module:
        """The weights the best epoch keeps: the EMA's when they validated better."""
        return self.ema.module if self.best_weights == "ema" else self.model


def check_classes(saved: dict[str, Any], classes: list[str]) -> None:
    """Refuse to resume on data whose classes differ from the checkpoint's."""
    if list(saved["class_names"]) != list(classes):
        raise ToolboxError(f"the checkpoint was trained on other classes "
                           f"({len(saved['class_names'])}) than the data now has "
                           f"({len(classes)})", "resume with the same data")


def load_model_state(model: nn.Module, saved: dict[str, Any], source: Path | None,
                     model_name: str) -> None:
    """The checkpoint's weights into `model`, or a ToolboxError naming the mismatch."""
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as exc:
        raise ToolboxError(f"checkpoint {source} does not fit {model_name}: "
                           f"{str(exc).splitlines()[0]}",
                           "resume with the checkpoint's own run folder") from exc


class CheckpointSaver:
    """Writes a run's checkpoints (as timm's `CheckpointSaver` does): `last.pt` after every
    epoch, `best.pt` and `model.safetensors` (the better of the raw and the EMA weights) when the
    validation score improves, and `last.pt` when the run is interrupted."""

    def __init__(self, run_dir: Path, channels_last: bool = False,
                 checkpoints: bool = True) -> None:
        self.run_dir = run_dir
        self.channels_last = channels_last
        self.checkpoints = checkpoints  # False: model.safetensors only (see `finetune`)

    def save_epoch(self, state: TrainState, improved: bool) -> None:
        if not self.checkpoints:
            if improved:
                self._save_model_file(state)
            return
        saved = state.to_dict()
        last = save_checkpoint(checkpoint_path(self.run_dir, LAST_CHECKPOINT), saved)
        if improved:
            best = checkpoint_path(self.run_dir, BEST_CHECKPOINT)
            with atomic_path(best) as tmp:
                # The same bytes as last.pt: a hard link, not a second write (135 MB for
                # resnet18 with Adam). last.pt is replaced by a rename, never rewritten in
                # place, so best.pt keeps these bytes when last.pt moves on.
                tmp.unlink()
                try:
                    os.link(last, tmp)
                except OSError:  # a file system without hard links
                    torch.save(saved, tmp)
            self._save_model_file(state)

    def save_interrupted(self, state: TrainState) -> Path:
        path = checkpoint_path(self.run_dir, LAST_CHECKPOINT)
        save_checkpoint(path, state.to_dict(interrupted=True))
        return path

    def _save_model_file(self, state: TrainState) -> None:
        model = state.best_model
        if self.channels_last:  # safetensors stores contiguous tensors only
            model.to(memory_format=torch.contiguous_format)
        try:
            save_safetensors(model, self.run_dir / MODEL_FILE, state.meta)
        finally:
            if self.channels_last:
                model.to(memory_format=torch.channels_last)
