"""The models a `tb benchmark` names, as `tb summary` and `tb export` read them: timm and
torchvision names and wildcards, user code, run folders, model files, and exports (`.onnx`, and
TorchScript as `.torchscript` or `.pt`)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolbox import runs
from toolbox.errors import ToolboxError, UsageError
from toolbox.models import is_code_spec, list_models, resolve_model

if TYPE_CHECKING:
    from toolbox.models import ModelFromSpec

WILDCARD_CHARS = "*?["
MODULE, ONNX, TORCHSCRIPT = "module", "onnx", "torchscript"


@dataclass(frozen=True)
class Target:
    """One model of the grid: a PyTorch module to build, or an export file to run as it is."""

    name: str  # as the table shows it
    spec: str  # what `load_for_summary` (or the export's runtime) is given
    kind: str  # MODULE, ONNX or TORCHSCRIPT
    path: Path | None = None  # the run folder or file, when one was named


def is_torchscript(path: Path) -> bool:
    """Whether `path` is a TorchScript archive (`torch.jit.save` writes a `code/` folder into
    the zip; a `torch.save` checkpoint, tb's `.pt` files included, has none)."""
    if path.suffix.lower() == ".torchscript":
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _expand_wildcard(pattern: str) -> list[Target]:
    listing = list_models(pattern=pattern)
    if not listing.rows:
        hint = (f"did you mean: {', '.join(listing.suggestions)}?" if listing.suggestions
                else "see `tb models list --filter WORD`")
        raise UsageError(f"no model matches '{pattern}'", hint, param="MODEL")
    return [Target(row.name, row.name, MODULE) for row in listing.rows]


def _file_target(spec: str, path: Path) -> Target:
    if path.is_dir():
        return Target(path.name or str(path), str(runs.find_model_file(path)), MODULE, path)
    if not path.is_file():
        raise ToolboxError(f"no such model file or run folder: {path}", "check the path")
    if path.suffix.lower() == ".onnx":
        return Target(path.name, spec, ONNX, path)
    if is_torchscript(path):
        return Target(path.name, spec, TORCHSCRIPT, path)
    return Target(path.name, spec, MODULE, path)


def expand_models(specs: list[str]) -> list[Target]:
    """Every model `specs` name, checked before anything runs: an unknown name fails here,
    with close matches, instead of half-way through a grid.

    Raises:
        UsageError: an unknown name, or a wildcard that matches nothing.
        ToolboxError: a path that does not exist, a run folder without a model.
    """
    targets: list[Target] = []
    for spec in specs:
        path = Path(spec)
        if is_code_spec(spec):
            targets.append(Target(spec.rpartition(":")[2], spec, MODULE))
        elif path.exists() or path.suffix.lower() in (".onnx", ".torchscript", ".pt", ".pth",
                                                      ".safetensors", ".ckpt", ".py"):
            targets.append(_file_target(spec, path))
        elif any(c in spec for c in WILDCARD_CHARS):
            targets.extend(_expand_wildcard(spec))
        else:
            resolve_model(spec)  # raises an unknown-name error with close matches
            targets.append(Target(spec, spec, MODULE))
    return list(dict.fromkeys(targets))


def build_module(target: Target) -> ModelFromSpec:
    """The PyTorch model of a MODULE target, random weights for names (`pretrained=False`)."""
    from toolbox.models import load_for_summary

    return load_for_summary(target.spec)
