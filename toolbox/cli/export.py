"""Command `export`: a run's model as ONNX or TorchScript, checked against the run."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolbox.cli import render
from toolbox.cli.errors import handle_errors
from toolbox.cli.options import JsonOpt
from toolbox.export import DEFAULT_OPSET, FORMATS, LEGACY_DEFAULT_OPSET, MAX_OPSET, MIN_OPSET

if TYPE_CHECKING:
    from toolbox.export import ExportResult, ParityResult

ExportFormat = StrEnum("ExportFormat", {name: name for name in FORMATS})


def _parity_rows(parity: ParityResult) -> list[tuple[str, object]]:
    return [
        ("check images", f"{parity.samples} from {parity.images}"),
        ("top-1 agreement", f"{parity.top1_agreement:.2%} (needs {parity.tolerance:.2%})"),
        (f"max abs {parity.compared} diff", f"{parity.max_abs_diff:.3g}"),
        ("parity", "passed" if parity.passed else "FAILED"),
    ]


def _show(result: ExportResult) -> None:
    rows: list[tuple[str, object]] = [
        ("file", result.file),
        ("format", result.format + (f" (opset {result.opset}, {result.exporter} exporter)"
                                    if result.opset else "")),
        ("from", f"{result.model_file} ({result.model})"),
        ("input", f"RGB float 0..1, {'N' if result.dynamic_batch else '1'}x"
                  + "x".join(map(str, result.input_size))),
        ("output", f"{result.output}, {len(result.class_names)} classes"),
        ("size", f"{result.size_bytes / 1e6:.2f} MB"),
    ]
    if result.parity is not None:
        rows += _parity_rows(result.parity)
    render.show(render.key_values("Export", rows))
    if result.exporter_note:
        render.note(result.exporter_note)


@handle_errors
def export(
    run_or_model_file: Annotated[Path, typer.Argument(
        help="A run folder written by `tb finetune` (its best weights), or a model file "
             "(model.safetensors, checkpoints/*.pt).", show_default=False)],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="The file to write (default: RUN/model.onnx or "
                            "RUN/model.torchscript).", show_default=False)] = None,
    fmt: Annotated[ExportFormat, typer.Option(
        "--format", "-f", case_sensitive=False,
        help="; ".join(f"{f.name}: {f.label}, {f.description}" for f in FORMATS.values())
        + ". TorchScript is deprecated upstream by torch (kept for libtorch users).")
    ] = ExportFormat("onnx"),
    dynamic_batch: Annotated[bool, typer.Option(
        "--dynamic-batch/--no-dynamic-batch",
        help="Let the batch size vary (else the file takes batch 1 only).")] = True,
    opset: Annotated[int | None, typer.Option(
        "--opset", min=MIN_OPSET, max=MAX_OPSET,
        help=f"ONNX opset ({MIN_OPSET} to {MAX_OPSET}; default {DEFAULT_OPSET}, or "
             f"{LEGACY_DEFAULT_OPSET} with --legacy-exporter; below {DEFAULT_OPSET} the "
             "TorchScript-based exporter writes the file).", show_default=False)] = None,
    legacy_exporter: Annotated[bool, typer.Option(
        "--legacy-exporter", help="Write ONNX with torch's TorchScript-based exporter "
        "(deprecated upstream) instead of the dynamo one (torch.export). It also stands in, "
        "with a note, where dynamo cannot export the model.")] = False,
    softmax: Annotated[bool, typer.Option(
        "--softmax", help="Output probabilities instead of logits.")] = False,
    check: Annotated[int, typer.Option(
        "--check", min=1, help="Images for the parity check against the PyTorch model.")] = 64,
    check_data: Annotated[Path | None, typer.Option(
        "--check-data", help="A folder of images for the check (default: the run's "
                             "validation data).", show_default=False)] = None,
    no_check: Annotated[bool, typer.Option(
        "--no-check", help="Skip the parity check (the file is then unverified).")] = False,
    tolerance: Annotated[float, typer.Option(
        "--tolerance", min=0.0, max=1.0,
        help="The least top-1 agreement with the PyTorch model that passes.")] = 0.99,
    json_out: JsonOpt = False,
) -> None:
    """Export a trained model to ONNX or TorchScript, proven to agree with the run.

    The file takes RGB float in [0, 1], NCHW, at the run's input size; normalisation is
    inside the graph. Class names, input size and the source run are in its metadata
    (ONNX metadata_props, TorchScript _extra_files). The written file is then run on
    images from the run's validation data (or --check-data) beside the PyTorch model;
    below --tolerance top-1 agreement the exit code is 1 and no file is kept.

    Examples:
      tb export runs/my-run
      tb export runs/my-run --format torchscript --softmax --check 128
      tb export runs/my-run --legacy-exporter --opset 13
      tb export runs/my-run/checkpoints/last.pt --out last.onnx --check-data photos/
    """
    from toolbox.cli.progress import make_progress
    from toolbox.export import ParityFailed, export_model
    from toolbox.jsonable import to_jsonable

    if no_check and check_data is not None:
        raise typer.BadParameter("--check-data and --no-check exclude each other")
    try:
        result = export_model(run_or_model_file, out=out, fmt=fmt.value,
                              dynamic_batch=dynamic_batch, opset=opset, softmax=softmax,
                              check=None if no_check else check, check_data=check_data,
                              tolerance=tolerance, legacy_exporter=legacy_exporter,
                              progress=make_progress(not json_out))
    except ParityFailed as exc:
        if json_out:
            render.print_json({"file": None, "parity": exc.result})
        else:
            render.show(render.key_values("Parity check", _parity_rows(exc.result)))
        raise
    if json_out:
        render.print_json(to_jsonable(result))
    else:
        _show(result)
    if no_check:
        render.warn("parity not checked (--no-check): the file may disagree with the run")
    from toolbox.cli.pictures import export_calibration_note

    export_calibration_note(result.model_file, result.source)


def register(app: typer.Typer) -> None:
    """Mount the `export` command on the root app."""
    app.command("export")(export)
