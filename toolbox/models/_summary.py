"""Model summaries: torchinfo's layer table, MACs from PyTorch's flop counter, and model loading
from names, `tb` model files and user code (`pkg.module:Factory`, `path/file.py:Class`)."""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import importlib.util
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolbox.errors import ToolboxError, UsageError, unknown_name
from toolbox.models._factory import TV_PREFIX

if TYPE_CHECKING:
    import torch
    from torch import nn

# torchinfo's own column names (torchinfo.enums.ColumnSettings), so `--columns` reads like its docs.
TORCHINFO_COLUMNS = ("input_size", "output_size", "num_params", "params_percent", "kernel_size",
                     "mult_adds", "trainable")
DEFAULT_COLUMNS = ("output_size", "num_params", "mult_adds")
DTYPES = {
    "float32": "float32", "float": "float32", "fp32": "float32",
    "float16": "float16", "half": "float16", "fp16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "double": "float64", "fp64": "float64",
}
MODEL_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
_SIZE_SPLIT = re.compile(r"\s*[,x×X]\s*")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class LayerRow:
    """One layer of the summary table (torchinfo's numbers)."""

    name: str  # dotted path in the model ("" for the model itself)
    type: str
    depth: int
    input_size: list[Any] | None
    output_size: list[Any] | None
    kernel_size: list[int] | int | None
    params: int  # every parameter under this layer, its children's included
    shown_params: int | None  # torchinfo's column: own params unless it is a leaf or at --depth
    trainable: str  # "True", "False", "Partial", or "--" without parameters
    mult_adds: int | None  # torchinfo's per-layer mult-adds (module calls only)


@dataclass
class ModelSummary:
    """What `tb summary` reports; sizes in MB, counts as plain numbers."""

    model: str
    source: str  # timm, torchvision, file or code
    architecture: str
    input_size: list[int]  # B, C, H, W
    dtype: str
    device: str
    mode: str
    depth: int
    columns: list[str]
    layers: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    frozen_params: int = 0
    macs: int | None = None  # from torch.utils.flop_counter (FLOPs / 2): functional ops included
    mult_adds: int | None = None  # torchinfo's total: module calls only
    input_size_mb: float | None = None
    forward_backward_size_mb: float | None = None
    params_size_mb: float | None = None
    estimated_total_size_mb: float | None = None
    forward_error: str | None = None  # set when the forward pass failed (params only then)
    tensorboard: str | None = None  # the log dir the graph was written to
    graph_error: str | None = None
    notes: list[str] = field(default_factory=list)  # things the user should know, one line each


# ---- option parsing (pure, no torch) -------------------------------------------------------

def parse_input_size(text: str) -> tuple[int, int, int, int]:
    """`3,224,224`, `1,3,224,224` or `3x224x224` -> (B, C, H, W), batch 1 when not given."""
    hint = "give C,H,W or B,C,H,W, e.g. 3,224,224, 1,3,224,224 or 3x224x224"
    parts = [p for p in _SIZE_SPLIT.split(text.strip()) if p != ""] if text else []
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (3, 4) or any(v <= 0 for v in values):
        raise UsageError(f"malformed --input-size '{text}'", hint)
    if len(values) == 3:
        values = [1, *values]
    return tuple(values)  # type: ignore[return-value]


def parse_columns(values: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """torchinfo column names, comma-separated or repeated; typos get close matches."""
    if not values:
        return DEFAULT_COLUMNS
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    for name in names:
        if name not in TORCHINFO_COLUMNS:
            raise unknown_name("column", name, TORCHINFO_COLUMNS,
                               f"columns are torchinfo's: {', '.join(TORCHINFO_COLUMNS)}",
                               param="--columns")
    return tuple(dict.fromkeys(names))


def parse_dtype(name: str) -> str:
    """A dtype name (`float32`, `fp16`, `bfloat16`...) -> its canonical torch name."""
    key = (name or "").strip().lower().removeprefix("torch.")
    if key not in DTYPES:
        raise unknown_name("dtype", name, list(DTYPES), "use float32, float16, bfloat16 or float64",
                           param="--dtype")
    return DTYPES[key]


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)  # literals only: numbers, strings, tuples, lists, dicts
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text  # a bare word is a string: act_layer=gelu


def parse_model_args(pairs: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """`key=value` pairs -> keyword arguments; values are Python literals, else strings."""
    kwargs: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not _IDENT.match(key):
            raise UsageError(f"malformed --model-arg '{pair}'",
                               "give key=value, e.g. --model-arg width=64 --model-arg "
                               "act='relu'")
        kwargs[key] = _literal(value.strip())
    return kwargs


# ---- loading the model ---------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A model ready to summarise and where it came from."""

    model: nn.Module
    source: str
    architecture: str
    input_size: tuple[int, ...] | None  # its default (C, H, W), when known


def _import_file(path: Path) -> Any:
    if not path.is_file():
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
    except Exception as exc:
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
    except Exception as exc:
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
                     model_args: dict[str, Any] | None = None) -> LoadedModel:
    """Build the model `spec` names: a timm/torchvision name, a `tb` model file, or user code."""
    from toolbox.models._checkpoint import load_model_file
    from toolbox.models._factory import create_model, replace_classifier, resolve_model

    model_args = dict(model_args or {})
    if ":" in spec and not spec.startswith(TV_PREFIX):
        model = load_user_model(spec, model_args)
        if num_classes is not None:
            replace_classifier(model, num_classes)
        return LoadedModel(model, "code", type(model).__name__, _default_input_size(model))
    path = Path(spec)
    if path.suffix == ".py":
        raise ToolboxError(f"'{spec}' names a Python file but not what to build from it",
                           f"add the class or factory: {spec}:MyModel")
    if path.suffix in MODEL_FILE_SUFFIXES or (path.suffix and path.is_file()):
        if model_args:
            raise UsageError("--model-arg does not apply to a model file",
                               "the file records the arguments its model was built with")
        model, meta = load_model_file(path)
        if num_classes is not None:
            replace_classifier(model, num_classes)
        return LoadedModel(model, "file", meta.model, tuple(meta.input_size))
    ref = resolve_model(spec)
    model = create_model(spec, num_classes=num_classes, **model_args)
    if ref.source == "timm":
        size = _default_input_size(model)
    else:
        from toolbox.models._registry import torchvision_defaults

        size = tuple(torchvision_defaults(ref.arch)["input_size"])
    arch = f"{ref.arch}.{ref.tag}" if ref.tag else ref.name
    return LoadedModel(model, ref.source, arch, size)


# ---- counting ------------------------------------------------------------------------------

def _attention_flops(query_shape: Any, key_shape: Any, value_shape: Any, *_: Any,
                     out_shape: Any = None, **__: Any) -> int:
    """FLOPs of q @ k^T and attn @ v (2 per multiply-add), as torch counts its CUDA kernels."""
    *batch, heads, q_len, dim = query_shape
    k_len, v_dim = key_shape[-2], value_shape[-1]
    n = heads
    for b in batch:
        n *= b
    return 2 * n * q_len * k_len * (dim + v_dim)


def flop_counter() -> Any:
    """A FlopCounterMode that also counts the CPU and MPS attention kernels.

    PyTorch has formulas for its CUDA attention kernels only; without these, ViT and Swin
    lose their attention MACs on the CPU (16.85 instead of 17.6 GMACs for vit_base_patch16_224).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    names = ("_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_attention_math_for_mps",
             "_scaled_dot_product_fused_attention_overrideable")
    mapping = {getattr(aten, n): _attention_flops for n in names if hasattr(aten, n)}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_macs(model: nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, from PyTorch's flop counter.

    FlopCounterMode counts 2 FLOPs per multiply-add of matmuls, convolutions and attention, the
    convention behind timm's published GMACs, so MACs = FLOPs / 2. Works on the meta device.
    """
    import torch

    counter = flop_counter()
    with counter, torch.no_grad():
        model(inputs)
    return int(counter.get_total_flops()) // 2


class _LayerTracker:
    """Remembers which layers the forward pass is inside, to name the one that failed."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: list[tuple[str, str]] = []
        self.handles = []
        for name, module in model.named_modules():
            label = (name, type(module).__name__)
            self.handles.append(module.register_forward_pre_hook(
                functools.partial(self._enter, label)))
            self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, label: tuple[str, str], *_: Any) -> None:
        self.stack.append(label)

    def _leave(self, *_: Any) -> None:
        if self.stack:
            self.stack.pop()

    def reached(self) -> str:
        if not self.stack:
            return "before the first layer"
        name, kind = self.stack[-1]
        return f"in layer '{name}' ({kind})" if name else f"in {kind}.forward"

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _layer_rows(stats: Any, depth: int) -> list[LayerRow]:
    rows = []
    for info in stats.summary_list:
        if info.depth > depth:
            continue
        path, node = [], info
        while node is not None and node.depth > 0:
            path.append(node.var_name)
            node = node.parent_info
        at_depth = info.depth == depth or info.is_leaf_layer
        if info.is_recursive:
            shown = None
        else:
            shown = info.num_params if at_depth else info.leftover_params()
        if info.is_leaf_layer:
            adds = info.macs
        elif info.depth == depth:
            adds = sum(c.macs for c in info.children if c.is_leaf_layer)
        else:
            adds = 0
        kernel = info.kernel_size
        rows.append(LayerRow(
            name=".".join(reversed(path)),
            type=info.class_name,
            depth=info.depth,
            input_size=list(info.input_size) or None,
            output_size=list(info.output_size) or None,
            kernel_size=list(kernel) if isinstance(kernel, tuple | list) else kernel,
            params=int(info.num_params),
            shown_params=int(shown) if shown else None,
            trainable=info.trainable,
            mult_adds=int(adds) if adds > 0 else None,
        ))
    return rows


def _params_only(net: nn.Module, depth: int) -> Any:
    """torchinfo's layer walk without a forward pass (parameter counts only), or None."""
    import torchinfo

    try:
        return torchinfo.summary(net, depth=depth, col_names=("num_params",), verbose=0)
    except Exception:  # a model torchinfo cannot even walk: the caller counts by hand
        return None


def summarize(model: str, *, input_size: tuple[int, ...] | None = None, depth: int = 3,
              columns: tuple[str, ...] = DEFAULT_COLUMNS, dtype: str = "float32",
              device: str = "auto", mode: str = "eval", num_classes: int | None = None,
              model_args: dict[str, Any] | None = None,
              tensorboard: str | Path | None = None) -> ModelSummary:
    """Summarise `model` (a name, a `tb` model file, or user code) with one forward pass.

    If the forward pass fails, the summary holds parameter counts only and `forward_error`
    names the layer the pass had reached.

    Raises:
        ToolboxError: unknown model, missing or unreadable file, bad options.
    """
    import torch
    import torchinfo

    from toolbox.devices import resolve_device

    if depth < 0:
        raise UsageError(f"--depth must be 0 or more, not {depth}", "e.g. --depth 2")
    if mode not in ("train", "eval"):
        raise ToolboxError(f"unknown mode '{mode}'", "use train or eval")
    for col in columns:
        if col not in TORCHINFO_COLUMNS:
            raise unknown_name("column", col, TORCHINFO_COLUMNS)
    dtype = parse_dtype(dtype)
    torch_dtype = getattr(torch, dtype)
    dev = resolve_device(device)
    loaded = load_for_summary(model, num_classes=num_classes, model_args=model_args)
    net = loaded.model
    notes = []
    if input_size is None:
        chw = loaded.input_size or (3, 224, 224)
        input_size = (1, *chw)
        if loaded.input_size is None:
            notes.append(f"{loaded.architecture} has no default input size; using 3x224x224 "
                         "(pass --input-size)")
    elif len(input_size) == 3:
        input_size = (1, *input_size)
    if len(input_size) != 4 or any(int(v) <= 0 for v in input_size):
        raise ToolboxError(f"malformed input size {tuple(input_size)}",
                           "give (C, H, W) or (B, C, H, W) with positive sizes")
    net = net.to(device=dev, dtype=torch_dtype)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(input_size, generator=generator).to(device=dev, dtype=torch_dtype)
    result = ModelSummary(model=model, source=loaded.source, architecture=loaded.architecture,
                          input_size=list(input_size), dtype=dtype, device=str(dev), mode=mode,
                          depth=depth, columns=list(columns), notes=notes)

    tracker = _LayerTracker(net)
    counter = flop_counter()
    try:
        with counter, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = torchinfo.summary(net, input_data=[x], depth=depth, col_names=columns,
                                      device=dev, mode=mode, verbose=0)
        result.macs = int(counter.get_total_flops()) // 2
    except Exception as exc:  # whatever the model raised: report it, fall back to counting
        cause = exc.__cause__ or exc
        result.forward_error = (f"forward pass of {loaded.architecture} with input "
                                f"{'x'.join(map(str, input_size))} failed {tracker.reached()}: "
                                f"{_first_line(cause)}")
        stats = _params_only(net, depth)
    finally:
        tracker.remove()

    if stats is None:  # even torchinfo's parameter walk failed: count directly
        params = {id(p): p for p in net.parameters()}.values()
        result.total_params = sum(p.numel() for p in params)
        result.trainable_params = sum(p.numel() for p in params if p.requires_grad)
        result.params_size_mb = round(sum(p.numel() * p.element_size() for p in params) / 1e6, 2)
    else:
        result.layers = _layer_rows(stats, depth)
        result.total_params = int(stats.total_params)
        result.trainable_params = int(stats.trainable_params)
        result.params_size_mb = round(stats.total_param_bytes / 1e6, 2)
    result.frozen_params = result.total_params - result.trainable_params
    if result.forward_error is None and stats is not None:
        result.mult_adds = int(stats.total_mult_adds)
        result.input_size_mb = round(stats.total_input / 1e6, 2)
        result.forward_backward_size_mb = round(stats.total_output_bytes / 1e6, 2)
        result.estimated_total_size_mb = round(
            (stats.total_input + stats.total_output_bytes + stats.total_param_bytes) / 1e6, 2)
        if tensorboard is not None:
            result.tensorboard = str(tensorboard)
            result.graph_error = write_graph(net, x, tensorboard, mode=mode)
    return result


def write_graph(model: nn.Module, inputs: torch.Tensor, logdir: str | Path,
                mode: str = "eval") -> str | None:
    """Add `model`'s graph to TensorBoard in `logdir`; the error text if tracing fails."""
    from toolbox.tensorboard import summary_writer

    model.train(mode == "train")
    try:
        with summary_writer(logdir) as writer, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about data-dependent branches
            writer.add_graph(model, inputs)
    except Exception as exc:  # torch.jit.trace raises many types
        return f"cannot write the graph to {logdir}: {_first_line(exc)}"
    return None
