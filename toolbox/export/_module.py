"""Exporting a bare PyTorch module (no run folder): what `tb benchmark` runs through
TorchScript and onnxruntime, written and checked by the same code as `tb export`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolbox.export._formats import (
    DEFAULT_OPSET,
    load_runner,
    output_shape,
    write_onnx,
    write_torchscript,
)
from toolbox.export._parity import CHUNK, ParityFailed, ParityResult, compare
from toolbox.progress import NullProgress

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

PARITY_IMAGES = 8  # random images when no real ones are given: enough for an argmax check


@dataclass
class ModuleExport:
    """A module written to `file`, and how well the file agrees with it."""

    file: Path
    format: str
    exporter: str | None  # ONNX: the exporter that wrote it ("dynamo" or "torchscript")
    note: str | None  # why the TorchScript-based exporter stood in for dynamo
    parity: ParityResult


def _random_images(size: int, count: int) -> list[np.ndarray]:
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def export_module(model: nn.Module, fmt: str, dest: str | Path, *, img_size: int,
                  images: list[np.ndarray] | None = None, tolerance: float = 0.99
                  ) -> ModuleExport:
    """Write `model` (eval mode, float32, RGB input at `img_size`, any batch) as `fmt` to
    `dest`, then run the file back on `images` (random ones by default) against the model.

    The model is exported as it is, without a run's normalisation: the parity check feeds both
    sides the same [0, 1] input (an identity normalisation in `compare`).

    Raises:
        ParityFailed: the file's top-1 agreement with the model is below `tolerance`.
        ToolboxError: the model cannot be traced or exported.
    """
    import torch

    from toolbox.inference.exported import INPUT_SIZE
    from toolbox.models import ModelMeta

    dest = Path(dest)
    model = model.eval()
    example = torch.rand(1, 3, img_size, img_size)
    sizes = output_shape(model, example)
    exporter = note = None
    metadata = {INPUT_SIZE: f"3,{img_size},{img_size}"}  # what `tb benchmark` reads back
    if fmt == "onnx":
        exporter, note = write_onnx(model, dest, example, opset=DEFAULT_OPSET,
                                    dynamic_batch=True, output="logits", sizes=sizes,
                                    metadata=metadata)
    else:
        write_torchscript(model, dest, example, metadata=metadata)
    classes = sizes[1] if len(sizes) > 1 else 1
    meta = ModelMeta(model=type(model).__name__, num_classes=classes,
                     input_size=(3, img_size, img_size), mean=(0.0, 0.0, 0.0),
                     std=(1.0, 1.0, 1.0), resize="squash")
    where = "the images given" if images else f"{PARITY_IMAGES} random images"
    parity = compare(model, meta, load_runner(fmt, dest),
                     images or _random_images(img_size, PARITY_IMAGES), where=where,
                     softmax=False, batch=CHUNK, tolerance=tolerance, progress=NullProgress())
    if not parity.passed:
        raise ParityFailed(parity)
    return ModuleExport(dest, fmt, exporter, note, parity)
