"""Training checkpoints: written atomically, read back with `weights_only=True` for `--resume`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from toolbox.errors import ToolboxError
from toolbox.fileio import atomic_path
from toolbox.models import torch_load
from toolbox.runs import LAST_CHECKPOINT, checkpoint_path

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
