"""`tb summary model.onnx`: an ONNX file's inputs, outputs, opsets, weights and metadata."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.errors import ToolboxError


@dataclass
class OnnxTensor:
    """A graph input or output: its name, shape (named dims stay names) and element type."""

    name: str
    shape: list[int | str]
    dtype: str


@dataclass
class OnnxSummary:
    """What `tb summary` reports for an ONNX file."""

    file: Path
    size_bytes: int
    producer: str
    ir_version: int
    opsets: dict[str, int]  # domain ("" is the default ONNX domain) -> version
    inputs: list[OnnxTensor] = field(default_factory=list)
    outputs: list[OnnxTensor] = field(default_factory=list)
    total_params: int = 0  # elements of every initializer (the weights)
    nodes: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def opset(self) -> int | None:
        """The default-domain opset, the number people mean by "opset"."""
        return self.opsets.get("", self.opsets.get("ai.onnx"))


def _tensor(value) -> OnnxTensor:
    import onnx

    kind = value.type.tensor_type
    shape: list[int | str] = [dim.dim_param or dim.dim_value for dim in kind.shape.dim]
    return OnnxTensor(value.name, shape, onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type).name)


def summarize_onnx(path: str | Path) -> OnnxSummary:
    """Read `path`'s graph: inputs, outputs, opsets, parameter count and metadata.

    Raises:
        ToolboxError: the file is missing or not a valid ONNX model.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ToolboxError(f"no such ONNX file: {path}", "check the path")
    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:  # protobuf's DecodeError, onnx's ValidationError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ToolboxError(f"cannot read ONNX model {path}: {first}",
                           "the file is damaged or not ONNX") from exc
    graph = proto.graph
    weights = {init.name for init in graph.initializer}
    return OnnxSummary(
        file=path, size_bytes=path.stat().st_size,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        ir_version=proto.ir_version,
        opsets={op.domain: op.version for op in proto.opset_import},
        # Old exporters list the weights among the inputs too; only real inputs are shown.
        inputs=[_tensor(v) for v in graph.input if v.name not in weights],
        outputs=[_tensor(v) for v in graph.output],
        # int64 initializers are shapes and indices (the dynamo exporter keeps a few), not weights.
        total_params=sum(math.prod(init.dims) for init in graph.initializer
                         if init.data_type != onnx.TensorProto.INT64),
        nodes=len(graph.node),
        metadata={p.key: p.value for p in proto.metadata_props})
