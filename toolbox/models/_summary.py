"""Model summaries: torchinfo's layer table with flop-counter MACs, and the TensorBoard graph."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolbox.errors import ToolboxError, UsageError, unknown_name
from toolbox.models._macs import flop_counter
from toolbox.models._sources import load_for_summary

if TYPE_CHECKING:
    from pathlib import Path

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


def parse_dtype(name: str) -> str:
    """A dtype name (`float32`, `fp16`, `bfloat16`...) -> its canonical torch name."""
    key = (name or "").strip().lower().removeprefix("torch.")
    if key not in DTYPES:
        raise unknown_name("dtype", name, list(DTYPES), "use float32, float16, bfloat16 or float64",
                           param="--dtype")
    return DTYPES[key]


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
        raise UsageError(f"unknown mode '{mode}'", "use train or eval", param="--mode")
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
    try:
        x = torch.randn(input_size, generator=generator).to(device=dev, dtype=torch_dtype)
    except (RuntimeError, MemoryError) as exc:  # e.g. --input-size 3,100000,100000: 120 GB
        raise ToolboxError(f"cannot make an input of size {'x'.join(map(str, input_size))}: "
                           f"{_first_line(exc)}", "pass a smaller --input-size") from exc
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
