"""Exported models: the metadata `tb export` writes into them, and running ONNX files.

An export takes RGB float32 in [0, 1], NCHW, at the run's input size; normalisation (and the
grayscale conversion of one-channel runs) happens inside the graph. So, seen from outside, its
preprocessing is the run's resize rule (crop, squash or letterbox: `toolbox.preprocess`) followed
by an identity normalisation, which is what `exported_meta` returns, and predict/evaluate feed it
through the same `eval_tensor` path as a PyTorch model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolbox.errors import ToolboxError
from toolbox.models import ModelMeta

if TYPE_CHECKING:
    import numpy as np
    import torch

# Keys of ONNX `metadata_props` and TorchScript `_extra_files`: plain strings, JSON for lists, so
# a user reads them with onnx/onnxruntime or torch.jit.load alone, without tb.
CLASS_NAMES = "class_names"
INPUT_SIZE = "input_size"  # "C,H,W" of the exported input (C is always 3: RGB)
INPUT_FORMAT = "input_format"
SOURCE_RUN = "source_run"
MODEL = "model"
OUTPUT = "output"  # "logits" or "probabilities"
TASK = "task"
RESIZE = "resize"  # how to bring an image to the input size, as the run did (JSON, see below)
TB_META = "tb_meta"  # the run's whole ModelMeta as JSON, for tools that want every detail
INPUT_FORMAT_TEXT = "RGB float32 in [0, 1], NCHW; normalisation is inside the graph"
OUTPUTS = ("logits", "probabilities")
INPUT_NAME = "image"


def export_metadata(meta: ModelMeta, *, source: str, output: str, task: str) -> dict[str, str]:
    """The string metadata an export carries: what a user needs to run it without tb."""
    _, height, width = meta.input_size
    return {
        CLASS_NAMES: json.dumps(list(meta.class_names)),
        INPUT_SIZE: f"3,{height},{width}",
        INPUT_FORMAT: INPUT_FORMAT_TEXT,
        SOURCE_RUN: source,
        MODEL: meta.model,
        OUTPUT: output,
        TASK: task,
        RESIZE: json.dumps(resize_rule(meta)),
        TB_META: json.dumps(meta.to_dict()),
    }


def resize_rule(meta: ModelMeta) -> dict[str, object]:
    """How a user brings an image to the export's input size: `mode` (crop: shorter side to
    size / crop_pct, centre crop; squash: straight to size; letterbox: longer side to size,
    centred, the rest filled with `pad`) and the interpolation."""
    from toolbox.preprocess import LETTERBOX_PAD

    # Segmentation resizes images (and masks) whole, whatever older files record.
    mode = "squash" if meta.task == "segment" else meta.resize
    rule: dict[str, object] = {"mode": mode, "interpolation": meta.interpolation}
    if mode == "crop":
        rule["crop_pct"] = meta.crop_pct
    if mode == "letterbox":
        rule["pad"] = LETTERBOX_PAD
    return rule


def exported_meta(props: dict[str, str], where: Path) -> tuple[ModelMeta, str]:
    """(preprocessing as seen from outside the graph, output kind) from an export's metadata.

    Raises:
        ToolboxError: the file was not written by `tb export` (or its metadata is damaged).
    """
    missing = [key for key in (TB_META, OUTPUT) if key not in props]
    if missing:
        raise ToolboxError(f"{where} has no tb metadata ({', '.join(missing)} missing)",
                           "predict and evaluate take ONNX files written by `tb export`")
    try:
        meta = ModelMeta.from_dict(json.loads(props[TB_META]))
    except (ValueError, TypeError) as exc:
        raise ToolboxError(f"{where} has damaged tb metadata: {exc}",
                           "export the run again with `tb export`") from exc
    if props[OUTPUT] not in OUTPUTS:
        raise ToolboxError(f"{where} has an unknown output kind '{props[OUTPUT]}'",
                           "export the run again with `tb export`")
    _, height, width = meta.input_size
    outside = dataclasses.replace(meta, input_size=(3, height, width), mean=(0.0, 0.0, 0.0),
                                  std=(1.0, 1.0, 1.0))
    return outside, props[OUTPUT]


def export_task(path: str | Path) -> str | None:
    """The `task` an ONNX export records (None for a file without tb metadata or unreadable:
    the loader then says what is wrong)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf's DecodeError and friends: not for this question to report
        return None
    return {p.key: p.value for p in proto.metadata_props}.get(TASK)


def onnx_providers(device: str) -> list[str]:
    """onnxruntime execution providers for `--device`: CUDA when present (auto) or asked for."""
    import onnxruntime as ort

    spec = (device or "auto").strip().lower()
    available = ort.get_available_providers()
    if spec == "cpu":
        return ["CPUExecutionProvider"]
    if spec == "auto":
        cuda = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []
        return [*cuda, "CPUExecutionProvider"]
    if spec.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ToolboxError("CUDA was asked for but this onnxruntime has no CUDA provider",
                               "use --device cpu (or install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ToolboxError(f"onnxruntime cannot run on '{device}'", "use --device auto, cpu or cuda")


def onnx_session(path: str | Path, providers: list[str] | None = None,
                 threads: int | None = None):
    """An onnxruntime session for `path` (`threads` intra-op threads, else onnxruntime's
    default: one per physical core); a file onnxruntime cannot load is a ToolboxError."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ToolboxError(f"no such ONNX file: {path}", "check the path")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ToolboxError(f"cannot load ONNX model {path}: {first}",
                           "the file is damaged or not ONNX; export it again with `tb export`"
                           ) from exc


class OnnxModel:
    """An ONNX file run by onnxruntime behind the call PyTorch models have: batch in, out out."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None
                 ) -> None:
        self.session = onnx_session(path, onnx_providers(device), threads)
        self.input_name = self.session.get_inputs()[0].name
        self.provider = self.session.get_providers()[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW in [0, 1] -> the graph's first output."""
        return self.session.run(None, {self.input_name: batch})[0]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        import numpy as np
        import torch

        array = np.ascontiguousarray(batch.detach().cpu().float().numpy())
        return torch.from_numpy(self.run(array))


@dataclass
class OnnxFile:
    """A loaded ONNX export: the runner, its outside preprocessing and its output kind."""

    model: OnnxModel
    meta: ModelMeta
    output: str


def load_onnx(path: str | Path, device: str = "auto") -> OnnxFile:
    """Open an ONNX file written by `tb export` for predict and evaluate.

    Raises:
        ToolboxError: the file is missing, damaged, or has no tb metadata.
    """
    model = OnnxModel(path, device)
    props = dict(model.session.get_modelmeta().custom_metadata_map)
    meta, output = exported_meta(props, Path(path))
    return OnnxFile(model, meta, output)
