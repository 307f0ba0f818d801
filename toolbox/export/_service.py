"""`tb export`'s service: write a run's model as ONNX or TorchScript, proven to agree with it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.errors import ToolboxError, UsageError, unknown_name
from toolbox.export._formats import (
    EXPORTERS,
    FORMATS,
    default_opset,
    load_runner,
    output_shape,
    write_onnx,
    write_torchscript,
)
from toolbox.export._parity import CHUNK, ParityFailed, ParityResult, check_images, compare
from toolbox.fileio import atomic_path
from toolbox.progress import NullProgress, Progress


@dataclass
class ExportResult:
    """What `export_model` wrote, and how well it agrees with the model it came from."""

    file: Path
    format: str
    source: Path  # the run folder or model file exported
    model_file: Path
    model: str
    task: str
    input_size: list[int]  # C, H, W of the exported input (RGB)
    output: str  # "logits" or "probabilities"
    class_names: list[str]
    dynamic_batch: bool
    opset: int | None  # ONNX only
    exporter: str | None  # ONNX only: "dynamo" (torch.export) or "torchscript" (legacy)
    size_bytes: int
    metadata: dict[str, str] = field(default_factory=dict)
    parity: ParityResult | None = None  # None with --no-check
    seconds: float = 0.0
    exporter_note: str | None = None  # why the TorchScript-based exporter stood in for dynamo


def default_out(source: Path, model_file: Path, fmt: str) -> Path:
    """RUN/model.<suffix> for a run folder, else the model file's name with the new suffix."""
    suffix = FORMATS[fmt].suffix
    if source.is_dir():
        return source / f"model{suffix}"
    return model_file.with_suffix(suffix)


def export_model(source: str | Path, *, out: str | Path | None = None, fmt: str = "onnx",
                 dynamic_batch: bool = True, opset: int | None = None, softmax: bool = False,
                 check: int | None = 64, check_data: str | Path | None = None,
                 tolerance: float = 0.99, legacy_exporter: bool = False,
                 progress: Progress | None = None) -> ExportResult:
    """Export the model of a run folder (best weights) or model file to `fmt`.

    The file takes RGB float in [0, 1], NCHW at the run's input size, and carries the class
    names, input size and source run as metadata. Unless `check` is None, the written file and
    the PyTorch model run on `check` images (from `check_data`, else the run's validation data);
    when their top-1 agreement is below `tolerance` nothing is kept and `ParityFailed` is raised.
    ONNX is written by torch's dynamo exporter unless `legacy_exporter` (the TorchScript-based
    one, which also stands in, with a note in the result, where dynamo cannot export the model).

    Raises:
        ParityFailed: the export disagrees with the model.
        ToolboxError: no model, unknown format, bad options, a model the exporter cannot handle.
    """
    import torch

    from toolbox.export._graph import DeployModel
    from toolbox.inference import load_for_inference
    from toolbox.inference.exported import export_metadata

    progress = progress or NullProgress()
    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS, f"choose one of {', '.join(FORMATS)}",
                           param="--format")
    if check is not None and check < 1:
        raise UsageError(f"--check must be at least 1, got {check}", "or give --no-check",
                         param="--check")
    if not 0.0 <= tolerance <= 1.0:
        raise UsageError(f"--tolerance must be between 0 and 1, got {tolerance}",
                         "it is the least top-1 agreement that passes, e.g. 0.99",
                         param="--tolerance")
    if fmt != "onnx" and opset is not None:
        raise UsageError("--opset applies to --format onnx only", param="--opset")
    if fmt != "onnx" and legacy_exporter:
        raise UsageError("--legacy-exporter applies to --format onnx only",
                         param="--legacy-exporter")
    exporter = EXPORTERS[1] if legacy_exporter else EXPORTERS[0]
    source = Path(source)
    if source.suffix.lower() in (".onnx", ".torchscript"):
        raise ToolboxError(f"{source} is already an export", "pass the run folder it came from")
    start = time.perf_counter()
    loaded = load_for_inference(run=source if source.is_dir() else None,
                                checkpoint=None if source.is_dir() else source, device="cpu")
    meta, model = loaded.meta, loaded.model
    dest = Path(out) if out is not None else default_out(source, loaded.model_file, fmt)
    if dest.resolve() == loaded.model_file.resolve():
        raise ToolboxError(f"--out {dest} is the model file being exported",
                           "give another --out")
    # Read the check images first: a missing data set should fail before a long export.
    images: list = []
    where = ""
    if check is not None:
        where, images = check_images(run_dir=loaded.run_dir,
                                     check_data=Path(check_data) if check_data else None,
                                     count=check)
    task = meta.task
    output = "probabilities" if softmax else "logits"
    run_name = str((loaded.run_dir or loaded.model_file).resolve())
    metadata = export_metadata(meta, source=run_name, output=output, task=task)
    deploy = DeployModel(model, meta, softmax=softmax).eval()
    _, height, width = meta.input_size
    example = torch.rand(1, 3, height, width)
    used_opset = (opset or default_opset(exporter)) if fmt == "onnx" else None
    used_exporter, note = (exporter if fmt == "onnx" else None), None
    sizes = output_shape(deploy, example)
    parity = None
    progress.note(f"exporting {loaded.model_file} to {FORMATS[fmt].label}")
    with atomic_path(dest) as tmp:
        if fmt == "onnx":
            used_exporter, note = write_onnx(deploy, tmp, example, opset=used_opset,
                                             dynamic_batch=dynamic_batch, output=output,
                                             sizes=sizes, metadata=metadata, exporter=exporter)
        else:
            write_torchscript(deploy, tmp, example, metadata=metadata)
        if check is not None:
            # The file as written, loaded back the way a user would, not the traced module.
            parity = compare(model, meta, load_runner(fmt, tmp), images, where=where,
                             softmax=softmax, batch=CHUNK if dynamic_batch else 1,
                             tolerance=tolerance, progress=progress)
            if not parity.passed:
                raise ParityFailed(parity)
        size = tmp.stat().st_size
    return ExportResult(
        file=dest, format=fmt, source=source, model_file=loaded.model_file, model=meta.model,
        task=task, input_size=[3, height, width], output=output,
        class_names=list(loaded.class_names), dynamic_batch=dynamic_batch, opset=used_opset,
        exporter=used_exporter, size_bytes=size, metadata=metadata, parity=parity,
        seconds=time.perf_counter() - start, exporter_note=note)
