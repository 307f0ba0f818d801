"""Models from user code: `package.module:Factory` and `path/to/file.py:ClassOrFactory`, as
`tb summary`, `tb finetune --model` and the run files they leave behind name them."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolbox.errors import ToolboxError, unknown_name
from toolbox.fileio import is_file
from toolbox.models._registry import TV_PREFIX

if TYPE_CHECKING:
    from torch import nn


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


def is_code_spec(spec: str) -> bool:
    """Whether a model argument names user code (`pkg.module:Factory`, `file.py:Class`)."""
    return ":" in spec and not spec.startswith(TV_PREFIX)


def absolute_spec(spec: str) -> str:
    """`file.py:Class` with the file's absolute path, so a run can rebuild it from anywhere."""
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or os.sep in target:
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return spec


def _takes(fn: Any, name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def load_user_model(spec: str, model_args: dict[str, Any] | None = None, *,
                    num_classes: int | None = None) -> nn.Module:
    """Build the model `spec` names: `package.module:Factory` or `path/to/file.py:ClassOrFactory`.

    The class or factory is called with `model_args` as keyword arguments (none by default).
    With `num_classes`, it is passed on when the class or factory takes it; otherwise its last
    Linear layer is replaced by one with `num_classes` outputs.
    """
    from torch import nn

    from toolbox.models._factory import replace_classifier

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ToolboxError(f"malformed model '{spec}'",
                           "use package.module:Factory or path/to/file.py:ClassOrFactory")
    is_file = target.endswith(".py") or "/" in target or os.sep in target
    module = _import_file(Path(target)) if is_file else _import_module(target)
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
    kwargs = dict(model_args or {})
    pass_classes = num_classes is not None and _takes(obj, "num_classes")
    if pass_classes:
        kwargs["num_classes"] = num_classes
    try:
        model = obj(**kwargs)
    except TypeError as exc:
        raise ToolboxError(f"cannot call {spec}: {exc}",
                           "check the --model-arg names it takes") from exc
    except Exception as exc:
        raise ToolboxError(f"{spec} failed: {type(exc).__name__}: {exc}",
                           "fix the error in the model code") from exc
    if not isinstance(model, nn.Module):
        raise ToolboxError(f"{spec} returned a {type(model).__name__}, not a torch nn.Module",
                           "point at an nn.Module subclass or a function returning one")
    if num_classes is not None and not pass_classes:
        replace_classifier(model, num_classes)
    return model
