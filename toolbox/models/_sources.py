"""Building the model a user named: a timm/torchvision name, a `tb` model file, or user code
(`pkg.module:Factory`, `path/file.py:Class`)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolbox.errors import ToolboxError, UsageError, unknown_name
from toolbox.fileio import is_file
from toolbox.models._checkpoint import load_model_file
from toolbox.models._factory import create_model, replace_classifier, resolve_model
from toolbox.models._registry import TV_PREFIX, torchvision_defaults

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


def _import_file(path: Path) -> Any:
    if not is_file(path):
        raise ToolboxError(f"no such file: {path}", "check the path before the ':'")
    mod_name = f"tb_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ToolboxError(f"cannot import {path}", "give a Python file ending in .py")
    module = importlib.util.module_from_spec(spec)
    # Its folder goes on sys.path so the file can import its neighbours, as `python file.py` can.
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    # SystemExit: a script that parses its command line (argparse) or exits at import.
    except (Exception, SystemExit) as exc:
        sys.modules.pop(mod_name, None)
        raise ToolboxError(f"cannot import {path}: {type(exc).__name__}: {exc}",
                           f"run `python {path}` to see the full error") from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


def _import_module(target: str) -> Any:
    # Like `uvicorn pkg.app:app`: modules in the current folder are importable.
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise ToolboxError(f"cannot import module '{target}': {exc}",
                           "run tb from the folder that holds the package, or pip install it"
                           ) from exc
    except (Exception, SystemExit) as exc:
        raise ToolboxError(f"cannot import module '{target}': {type(exc).__name__}: {exc}",
                           f"run `python -c 'import {target}'` to see the full error") from exc
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


def load_user_model(spec: str, model_args: dict[str, Any] | None = None) -> nn.Module:
    """Build the model `spec` names: `package.module:Factory` or `path/to/file.py:ClassOrFactory`.

    The class or factory is called with `model_args` as keyword arguments (none by default).
    """
    from torch import nn

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ToolboxError(f"malformed model '{spec}'",
                           "use package.module:Factory or path/to/file.py:ClassOrFactory")
    from_file = target.endswith(".py") or "/" in target or os.sep in target
    module = _import_file(Path(target)) if from_file else _import_module(target)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            choices = [n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__]
            raise unknown_name("class or factory", attr, choices,
                               f"{target} defines: {', '.join(choices) or 'none'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ToolboxError(f"{spec} is not a class or a function",
                           "point at an nn.Module subclass or a function returning one")
    try:
        model = obj(**(model_args or {}))
    except TypeError as exc:
        raise ToolboxError(f"cannot call {spec}: {exc}",
                           "check the --model-arg names it takes") from exc
    except Exception as exc:
        raise ToolboxError(f"{spec} failed: {type(exc).__name__}: {exc}",
                           "fix the error in the model code") from exc
    if not isinstance(model, nn.Module):
        raise ToolboxError(f"{spec} returned a {type(model).__name__}, not a torch nn.Module",
                           "point at an nn.Module subclass or a function returning one")
    return model


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
    if ":" in spec and not spec.startswith(TV_PREFIX):
        model = load_user_model(spec, model_args)
        if num_classes is not None:
            replace_classifier(model, num_classes)
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
