"""Command `summary`: a model's layer table, parameter counts, MACs and memory sizes."""

from __future__ import annotations

import ast
import re
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from toolbox.cli import render
from toolbox.cli.errors import handle_errors
from toolbox.cli.options import DeviceOpt, JsonOpt, LogdirOpt
from toolbox.errors import ToolboxError, UsageError, unknown_name
from toolbox.jsonable import to_jsonable

if TYPE_CHECKING:
    from toolbox.export import OnnxSummary
    from toolbox.models import ModelSummary

_SIZE_SPLIT = re.compile(r"\s*[,x×X]\s*")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Mode(StrEnum):
    """The mode the model runs its forward pass in."""

    train = "train"
    eval = "eval"


# ---- option parsing (strings from the command line; no torch) ------------------------------

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
    from toolbox.models import DEFAULT_COLUMNS, TORCHINFO_COLUMNS

    if not values:
        return DEFAULT_COLUMNS
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    for name in names:
        if name not in TORCHINFO_COLUMNS:
            raise unknown_name("column", name, TORCHINFO_COLUMNS,
                               f"columns are torchinfo's: {', '.join(TORCHINFO_COLUMNS)}",
                               param="--columns")
    return tuple(dict.fromkeys(names))


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


# ---- rendering ----------------------------------------------------------------------------

def _shape(values: list | None) -> str:
    return "x".join(map(str, values)) if values else "--"


def _count(value: int | None) -> str:
    return f"{value:,}" if value else "--"


def _giga(value: int | None) -> str:
    return f"{value / 1e9:.2f} G ({value:,})" if value is not None else "--"


def _cell(layer, column: str, total: int) -> str:
    if column == "input_size":
        return _shape(layer.input_size)
    if column == "output_size":
        return _shape(layer.output_size)
    if column == "num_params":
        if layer.shown_params and layer.trainable == "False":
            return f"({layer.shown_params:,})"  # torchinfo's mark for frozen weights
        return _count(layer.shown_params)
    if column == "params_percent":
        return f"{layer.shown_params / total:.2%}" if layer.shown_params and total else "--"
    if column == "kernel_size":
        return _shape(layer.kernel_size if isinstance(layer.kernel_size, list)
                      else [layer.kernel_size] if layer.kernel_size else None)
    if column == "mult_adds":
        return _count(layer.mult_adds)
    return layer.trainable


def _render(result: ModelSummary) -> None:
    columns = list(result.columns) if result.forward_error is None else ["num_params"]
    rows = []
    for layer in result.layers:
        label = f"{layer.name}: {layer.type}" if layer.name else layer.type
        rows.append(["  " * layer.depth + label,
                     *(_cell(layer, c, result.total_params) for c in columns)])
    title = (f"{result.architecture} ({result.source}) · input {_shape(result.input_size)} "
             f"{result.dtype} on {result.device}, {result.mode} mode")
    render.show(render.table(title, ["layer", *columns], rows,
                             right=[c for c in columns if c not in ("trainable",)]))

    def mb(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "--"

    render.show(render.key_values(None, [
        ("Total params", f"{result.total_params:,}"),
        ("Trainable params", f"{result.trainable_params:,}"),
        ("Frozen params", f"{result.frozen_params:,}"),
        ("MACs (flop counter)", _giga(result.macs)),
        ("Mult-adds (torchinfo, module calls only)", _giga(result.mult_adds)),
        ("Input size (MB)", mb(result.input_size_mb)),
        ("Forward/backward pass size (MB)", mb(result.forward_backward_size_mb)),
        ("Params size (MB)", mb(result.params_size_mb)),
        ("Estimated total size (MB)", mb(result.estimated_total_size_mb)),
    ]))
    if result.tensorboard and not result.graph_error:
        from toolbox.tensorboard import tensorboard_command

        render.note(f"graph written to {result.tensorboard} "
                    f"({tensorboard_command(result.tensorboard)})")


def _render_onnx(result: OnnxSummary) -> None:
    rows = [(kind, t.name, _shape(t.shape), t.dtype)
            for kind, tensors in (("input", result.inputs), ("output", result.outputs))
            for t in tensors]
    render.show(render.table(f"{result.file} (ONNX)", ["", "name", "shape", "dtype"], rows))
    opsets = ", ".join(f"{domain or 'ai.onnx'} {version}"
                       for domain, version in result.opsets.items())
    render.show(render.key_values(None, [
        ("Total params", f"{result.total_params:,}"),
        ("Opset", opsets),
        ("Nodes", f"{result.nodes:,}"),
        ("Producer", result.producer or "--"),
        ("File size (MB)", f"{result.size_bytes / 1e6:.2f}"),
    ]))
    if result.metadata:
        render.show(render.key_values("Metadata", sorted(result.metadata.items())))


@handle_errors
def summary(
    model: Annotated[str, typer.Argument(
        metavar="MODEL",
        help="A timm/torchvision name, a .safetensors/.pt file written by tb, an .onnx file "
             "(inputs, outputs, opset, params, metadata), or user code: "
             "package.module:Factory or path/to/file.py:ClassOrFactory.")],
    input_size: Annotated[str | None, typer.Option(
        "--input-size", "-i", metavar="C,H,W",
        help="C,H,W or B,C,H,W (also 3x224x224). Default: the model's pretrained config, "
             "batch 1.")] = None,
    depth: Annotated[int, typer.Option("--depth", "-d", min=0,
                                       help="How many levels of nested layers to show.")] = 3,
    columns: Annotated[list[str] | None, typer.Option(
        "--columns", "-c", metavar="NAMES", show_default="output_size,num_params,mult_adds",
        help="torchinfo columns, comma-separated or repeated: input_size, output_size, "
             "num_params, params_percent, kernel_size, mult_adds, trainable.")] = None,
    dtype: Annotated[str, typer.Option(
        "--dtype", help="float32, float16, bfloat16 or float64.")] = "float32",
    device: DeviceOpt = "auto",
    mode: Annotated[Mode, typer.Option("--mode", help="Run the model in train or eval mode.",
                                       case_sensitive=False)] = Mode.eval,
    num_classes: Annotated[int | None, typer.Option(
        "--num-classes", min=1, help="Give the model a new head with this many classes.")
    ] = None,
    model_args: Annotated[list[str] | None, typer.Option(
        "--model-arg", "-a", metavar="KEY=VALUE",
        help="Keyword argument for the model's factory; values are Python literals "
             "(repeatable).")] = None,
    tensorboard: LogdirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Summarise a model: layers, parameters, MACs and memory, from one forward pass.

    MACs come from PyTorch's flop counter, so attention and functional matmuls count too;
    torchinfo's per-layer mult-adds count module calls only.

    Examples:
      tb summary resnet18 --depth 1
      tb summary vit_base_patch16_224 -i 3x224x224 --columns input_size,num_params
      tb summary my_model.py:Net --model-arg width=32 --json
      tb summary runs/my-run/model.onnx
    """
    if model.lower().endswith(".onnx"):
        from toolbox.export import summarize_onnx

        onnx_result = summarize_onnx(model)
        if json_output:
            render.print_json({**to_jsonable(onnx_result), "opset": onnx_result.opset})
        else:
            _render_onnx(onnx_result)
        return
    from toolbox.models import parse_dtype, summarize

    size = parse_input_size(input_size) if input_size is not None else None
    result = summarize(
        model, input_size=size, depth=depth, columns=parse_columns(columns),
        dtype=parse_dtype(dtype), device=device, mode=mode.value, num_classes=num_classes,
        model_args=parse_model_args(model_args), tensorboard=tensorboard,
    )
    for line in result.notes:
        render.note(line)
    if json_output:
        render.print_json(result)
    else:
        _render(result)
    if result.forward_error:
        raise ToolboxError(result.forward_error,
                           "the summary above shows parameter counts only; check --input-size "
                           "(and --mode, --dtype) against what the model expects")
    if result.graph_error:
        raise ToolboxError(result.graph_error, "the model cannot be traced by torch.jit; "
                                               "the summary above is complete")


def register(root: typer.Typer) -> None:
    """Mount the `summary` command on the root app."""
    root.command("summary")(summary)
