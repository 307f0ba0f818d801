"""Writing the two export formats, and running a written file back for the parity check."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolbox.errors import ToolboxError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

# The torch.export-based ONNX exporter (dynamo=True, through onnxscript) is torch's supported
# one and the default; it writes opset 18 and newer. The TorchScript-based one, deprecated
# upstream, stays for older opsets (7 to 17) and for models torch.export cannot follow.
MIN_OPSET, MAX_OPSET = 7, 20
DYNAMO_MIN_OPSET = 18
DEFAULT_OPSET = 18  # the dynamo exporter's
LEGACY_DEFAULT_OPSET = 17
EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True)
class Format:
    """An export format: its name, file suffix, how people write it, and what reads it."""

    name: str
    suffix: str
    label: str
    description: str


FORMATS = {
    "onnx": Format("onnx", ".onnx", "ONNX", "for onnxruntime, TensorRT, OpenVINO and others"),
    "torchscript": Format("torchscript", ".torchscript", "TorchScript",
                          "for torch.jit.load in Python or libtorch in C++"),
}


def _first_line(exc: BaseException) -> str:
    # torch.export's errors colour their text with terminal escapes.
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def output_shape(module: nn.Module, example: torch.Tensor) -> tuple[int, ...]:
    """The shape of `module`'s output for `example`, run once before any file is written: both
    formats hand on exactly one tensor, and the tracers would drop or mangle anything else (a
    None beside the logits vanishes from an ONNX graph).

    Raises:
        ToolboxError: the model fails on an input of the run's size, or returns no one tensor.
    """
    import torch

    try:
        with torch.inference_mode():
            out = module(example)
    except Exception as exc:
        raise ToolboxError(f"the model fails on an input of size {tuple(example.shape)}: "
                           f"{type(exc).__name__}: {_first_line(exc)}",
                           "rerun with --debug to see where") from exc
    if not isinstance(out, torch.Tensor):
        raise ToolboxError(f"the model returns a {type(out).__name__}, not one tensor of scores, "
                           "so it cannot be exported", "make its forward return the logits alone")
    return tuple(out.shape)


def default_opset(exporter: str) -> int:
    """The opset written when --opset is not given: each exporter's own best-supported one."""
    return DEFAULT_OPSET if exporter == "dynamo" else LEGACY_DEFAULT_OPSET


def _check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"--opset {opset} is outside what the exporter writes "
                         f"({MIN_OPSET} to {MAX_OPSET})", f"use --opset {DEFAULT_OPSET}",
                         param="--opset")


def _export_dynamo(module: nn.Module, dest: Path, example: torch.Tensor, *, opset: int,
                   dynamic_batch: bool, output: str) -> None:
    import torch

    from toolbox.inference.exported import INPUT_NAME

    # torch.export specialises a size-1 dimension, so a dynamic batch is traced at batch 2.
    if dynamic_batch:
        example = example.expand(2, *example.shape[1:]).contiguous()
    axes = {INPUT_NAME: {0: "batch"}, output: {0: "batch"}} if dynamic_batch else None
    # The exporter reports its steps on stdout, which is the CLI's (--json) alone.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(dest), dynamo=True, verbose=False,
                          input_names=[INPUT_NAME], output_names=[output],
                          opset_version=opset, dynamic_axes=axes, optimize=True,
                          external_data=False)


def _export_legacy(module: nn.Module, dest: Path, example: torch.Tensor, *, opset: int,
                   dynamic_batch: bool, output: str) -> None:
    import torch

    from toolbox.inference.exported import INPUT_NAME

    axes = {INPUT_NAME: {0: "batch"}, output: {0: "batch"}} if dynamic_batch else None
    try:
        with warnings.catch_warnings():
            # The exporter warns that it is the legacy one and about tracing Python values;
            # the parity check is what tells whether the graph is right.
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(dest), dynamo=False,
                              input_names=[INPUT_NAME], output_names=[output],
                              opset_version=opset, dynamic_axes=axes, do_constant_folding=True)
    except Exception as exc:
        message = _first_line(exc)
        if "opset" in message.lower() or "UnsupportedOperator" in type(exc).__name__:
            raise ToolboxError(f"cannot export to ONNX opset {opset}: {message}",
                               f"try a newer --opset (up to {MAX_OPSET})") from exc
        raise ToolboxError(f"cannot export the model to ONNX: {type(exc).__name__}: {message}",
                           "try --format torchscript, or another --opset") from exc


def write_onnx(module: nn.Module, dest: Path, example: torch.Tensor, *, opset: int,
               dynamic_batch: bool, output: str, sizes: tuple[int, ...],
               metadata: dict[str, str], exporter: str = "dynamo") -> tuple[str, str | None]:
    """Export `module` to ONNX at `dest`, with `metadata` as the model's `metadata_props` and
    `sizes` (its `output_shape`) written for the output dimensions the tracer leaves symbolic.

    `exporter` "dynamo" uses torch.export; where it cannot (an opset below 18, or a model
    torch.export cannot follow) the TorchScript-based exporter writes the file instead, and the
    note returned says why. Returns (the exporter that wrote the file, that note or None).

    Raises:
        ToolboxError: an opset outside what the exporters write, an operator the TorchScript
            exporter cannot express at `opset`, or a model neither exporter can trace.
    """
    import onnx

    _check_opset(opset)
    used, note = exporter, None
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        used = "torchscript"
        note = (f"opset {opset} is below what the dynamo exporter writes ({DYNAMO_MIN_OPSET}+): "
                "used the TorchScript-based exporter")
    elif exporter == "dynamo":
        try:
            _export_dynamo(module, dest, example, opset=opset, dynamic_batch=dynamic_batch,
                           output=output)
        except Exception as exc:
            # torch.onnx wraps torch.export's error in a page of advice; the cause is the news.
            while exc.__cause__ is not None:
                exc = exc.__cause__
            used = "torchscript"
            note = (f"the dynamo exporter could not export the model ({type(exc).__name__}: "
                    f"{_first_line(exc)[:160]}): used the TorchScript-based exporter")
    if used == "torchscript":
        _export_legacy(module, dest, example, opset=opset, dynamic_batch=dynamic_batch,
                       output=output)
    proto = onnx.load(str(dest))
    # The tracer leaves some output sizes symbolic (Concat_dim_1) where the model computes
    # them; they are fixed for a given input size, so write them down for the file's readers.
    for index, dim in enumerate(proto.graph.output[0].type.tensor_type.shape.dim):
        if not (dynamic_batch and index == 0):
            dim.dim_value = sizes[index]
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(dest))
    return used, note


def write_torchscript(module: nn.Module, dest: Path, example: torch.Tensor, *,
                      metadata: dict[str, str]) -> None:
    """Trace `module` to TorchScript at `dest`, with `metadata` as its `_extra_files`.

    Raises:
        ToolboxError: the model cannot be traced.
    """
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.save(traced, str(dest), _extra_files=metadata)
    except Exception as exc:
        raise ToolboxError(f"cannot trace the model to TorchScript: {type(exc).__name__}: "
                           f"{_first_line(exc)}", "try --format onnx") from exc


def load_runner(fmt: str, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """float32 NCHW batch -> output, from the written file alone (what a user would run)."""
    import torch

    if fmt == "onnx":
        from toolbox.inference.exported import OnnxModel

        return OnnxModel(path, "cpu").run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return loaded(torch.from_numpy(batch)).numpy()

    return run
