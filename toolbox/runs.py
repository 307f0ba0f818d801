"""The layout of a run folder written by `tb finetune`, read by `tb predict`, `evaluate`, `summary`.

    RUN/
      args.yaml              resolved arguments
      metrics.csv            one row per epoch
      model.safetensors      best weights + ModelMeta (classes, preprocessing)
      checkpoints/last.pt    full training state, written every epoch
      checkpoints/best.pt    the same at the best validation accuracy
      events.out.tfevents.*  TensorBoard (the run folder is the log dir)
      calibration.json       temperature from `tb evaluate --calibrate` (read by `tb predict`)
"""

from __future__ import annotations

from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.fileio import is_file

ARGS_FILE = "args.yaml"
METRICS_FILE = "metrics.csv"
MODEL_FILE = "model.safetensors"
RESULT_FILE = "result.yaml"
CALIBRATION_FILE = "calibration.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


def checkpoint_path(run_dir: str | Path, which: str = LAST_CHECKPOINT) -> Path:
    """Path of a checkpoint inside a run folder."""
    return Path(run_dir) / CHECKPOINT_DIR / which


def holds_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` already holds a run (a checkpoint or a model file); False for a name
    no folder can have (longer than the system allows), which making the folder reports."""
    return is_file(checkpoint_path(run_dir)) or is_file(Path(run_dir) / MODEL_FILE)


def find_model_file(run_or_file: str | Path) -> Path:
    """The model file to use for a run folder (best weights first) or the file itself."""
    path = Path(run_or_file)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ToolboxError(f"no such run folder or model file: {path}", "check the path")
    for candidate in (path / MODEL_FILE, checkpoint_path(path, BEST_CHECKPOINT),
                      checkpoint_path(path, LAST_CHECKPOINT)):
        if candidate.is_file():
            return candidate
    raise ToolboxError(f"{path} holds no run: no {MODEL_FILE} or {CHECKPOINT_DIR}/*.pt",
                       "pass the folder that `tb finetune --out` wrote")


# Held-out sub-folder names, tried in this order (`tb datasets fetch --export-folder` writes test/).
HELD_OUT_FOLDERS = ("val", "valid", "validation", "test")


def split_folders(root: str | Path) -> tuple[Path, Path | None]:
    """The training and held-out folders of a data folder: (train_dir, held_out_dir).

    `root/train` beside one of `root/val`, `valid`, `validation` or `test` (tried in that order)
    is a split layout: `(root/train, root/<held-out>)`. A `root/train` that is root's only
    sub-folder gives `(root/train, None)`: the classes are under train/ and the caller splits
    off its own validation set (`tb finetune --val-split`). Anything else, a class folder named
    `train` among others included, is one plain class tree: `(root, None)`.
    """
    root = Path(root)
    train = root / "train"
    if not train.is_dir():
        return root, None
    held_out = next((root / name for name in HELD_OUT_FOLDERS if (root / name).is_dir()), None)
    if held_out is not None:
        return train, held_out
    if all(p == train for p in root.iterdir() if p.is_dir()):
        return train, None
    return root, None
