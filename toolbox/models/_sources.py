"""Building the model a user named: a timm/torchvision name, a `tb` model file, or user code
(`pkg.module:Factory`, `path/file.py:Class`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolbox.errors import ToolboxError, UsageError
from toolbox.fileio import is_file
from toolbox.models._checkpoint import load_model_file
from toolbox.models._factory import create_model, replace_classifier, resolve_model
from toolbox.models._registry import torchvision_defaults
from toolbox.models._user import is_code_spec, load_user_model

if TYPE_CHECKING:
    from torch import nn

MODEL_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


@dataclass
class ModelFromSpec:
    """A model built from what the user named, and where it came from."""

    model: nn.Module
    source: str
    architecture: str
    input_size: tuple[int, ...] | None  # its default (C, H, W), when known


def _default_input_size(model: nn.Module) -> tuple[int, ...] | None:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return tuple(cfg["input_size"])
    size = getattr(model, "input_size", None)  # a convention some user models follow
    if isinstance(size, tuple | list) and len(size) == 3:
        return tuple(int(v) for v in size)
    return None


def load_for_summary(spec: str, *, num_classes: int | None = None,
                     model_args: dict[str, Any] | None = None) -> ModelFromSpec:
    """Build the model `spec` names: a timm/torchvision name, a `tb` model file, or user code."""
    model_args = dict(model_args or {})
    if is_code_spec(spec):
        model = load_user_model(spec, model_args, num_classes=num_classes)
        return ModelFromSpec(model, "code", type(model).__name__, _default_input_size(model))
    path = Path(spec)
    if path.suffix == ".py":
        raise ToolboxError(f"'{spec}' names a Python file but not what to build from it",
                           f"add the class or factory: {spec}:MyModel")
    if path.suffix in MODEL_FILE_SUFFIXES or (path.suffix and is_file(path)):
        if model_args:
            raise UsageError("--model-arg does not apply to a model file",
                               "the file records the arguments its model was built with")
        model, meta = load_model_file(path)
        if num_classes is not None:
            replace_classifier(model, num_classes)
        return ModelFromSpec(model, "file", meta.model, tuple(meta.input_size))
    ref = resolve_model(spec)
    if "num_classes" in model_args:  # `--model-arg num_classes=N` means --num-classes N
        given = model_args.pop("num_classes")
        num_classes = given if num_classes is None else num_classes
    model = create_model(spec, num_classes=num_classes, **model_args)
    if ref.source == "timm":
        size = _default_input_size(model)
    else:
        size = tuple(torchvision_defaults(ref.arch)["input_size"])
    arch = f"{ref.arch}.{ref.tag}" if ref.tag else ref.name
    return ModelFromSpec(model, ref.source, arch, size)
