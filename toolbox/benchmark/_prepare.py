"""A target made ready for the grid: its module, params and GMACs, and one runner per runtime
(TorchScript and ONNX exported on the fly with `tb export`'s code and parity check)."""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolbox.benchmark._models import MODULE, ONNX, TORCHSCRIPT, Target, build_module
from toolbox.benchmark._steps import Runner
from toolbox.errors import ToolboxError
from toolbox.progress import Progress

if TYPE_CHECKING:
    from torch import nn

DEFAULT_IMG_SIZE = 224


@dataclass
class Prepared:
    """What every setting of one model shares."""

    target: Target
    source: str
    img_size: int
    params: int | None
    gmacs: float | None
    runners: dict[str, Runner] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # how the exports were made, when it matters


def failure(exc: BaseException) -> str:
    """One line for a setting that could not run: the error's first line, with its type."""
    if isinstance(exc, ToolboxError):
        return exc.message
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _gmacs(model: Any, img_size: int) -> float | None:
    """GMACs of one image, from the flop counter `tb summary` uses (None where it cannot run)."""
    import torch

    from toolbox.models import count_macs

    try:
        return count_macs(model, torch.zeros(1, 3, img_size, img_size)) / 1e9
    except Exception:  # a model the flop counter cannot follow: the column stays empty
        return None


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _export(model: nn.Module, runtime: str, folder: Path, img_size: int, device: str,
            threads: int | None, progress: Progress, notes: list[str]) -> Runner:
    import torch

    from toolbox.export import export_module
    from toolbox.inference.exported import OnnxModel

    fmt = "onnx" if runtime == "onnxruntime" else "torchscript"
    try:
        done = export_module(model, fmt, folder / f"model.{fmt}", img_size=img_size)
    except Exception as exc:  # an export that fails makes that runtime's rows, not a crash
        return Runner(runtime, reason=f"export to {fmt} failed: {failure(exc)}")
    if done.note:
        notes.append(f"{fmt}: {done.note}")
        progress.note(notes[-1])
    if fmt == "onnx":
        try:
            onnx_model = OnnxModel(done.file, device, threads)
        except ToolboxError as exc:  # no CUDA provider for --device cuda, say
            return Runner(runtime, reason=exc.message)
        return Runner(runtime, onnx=onnx_model, parity=done.parity.top1_agreement)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(done.file), map_location="cpu")
    return Runner(runtime, module=module, parity=done.parity.top1_agreement)


def _file_runners(target: Target, runtimes: tuple[str, ...], device: str,
                  threads: int | None) -> tuple[dict[str, Runner], int | None, Any]:
    """Runners of an export given as a file: it runs in its own runtime only."""
    import torch

    own = "onnxruntime" if target.kind == ONNX else "torchscript"
    runners = {rt: Runner(rt, reason=f"a {'ONNX' if target.kind == ONNX else 'TorchScript'} "
                                     f"file runs in {own} only") for rt in runtimes if rt != own}
    if own not in runtimes:
        return runners, None, None
    if target.kind == ONNX:
        from toolbox.export import summarize_onnx
        from toolbox.inference.exported import OnnxModel

        runners[own] = Runner(own, onnx=OnnxModel(target.spec, device, threads))
        return runners, summarize_onnx(target.spec).total_params, runners[own].onnx
    from toolbox.inference.exported import INPUT_SIZE

    extra = {INPUT_SIZE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(target.spec, map_location="cpu", _extra_files=extra)
    module.tb_input_size = _size_from_text(extra[INPUT_SIZE])
    runners[own] = Runner(own, module=module)
    return runners, _params(module), module


def _size_from_text(text: str | bytes) -> int | None:
    """W of the "C,H,W" input size `tb export` writes into its files' metadata."""
    text = text.decode() if isinstance(text, bytes) else text
    last = text.rpartition(",")[2].strip()
    return int(last) if last.isdigit() else None


def _file_img_size(target: Target, model: Any) -> int | None:
    """The input size an export was made for: the ONNX graph's fixed width, else the size
    `tb export` recorded."""
    if model is None:
        return None
    if target.kind == TORCHSCRIPT:
        return getattr(model, "tb_input_size", None)
    shape = model.session.get_inputs()[0].shape
    if shape and isinstance(shape[-1], int):
        return shape[-1]
    from toolbox.inference.exported import INPUT_SIZE

    props = model.session.get_modelmeta().custom_metadata_map
    return _size_from_text(props.get(INPUT_SIZE, ""))


def prepare(target: Target, runtimes: tuple[str, ...], *, img_size: int | None, device: str,
            threads: int | None, folder: Path, progress: Progress) -> Prepared:
    """Build `target` once for all its settings; exports go to `folder` (a temporary one)."""
    if target.kind != MODULE:
        runners, params, model = _file_runners(target, runtimes, device, threads)
        size = img_size or _file_img_size(target, model) or DEFAULT_IMG_SIZE
        gmacs = _gmacs(model, size) if target.kind == TORCHSCRIPT and model is not None else None
        return Prepared(target, target.kind, size, params, gmacs, runners)
    built = build_module(target)
    model = built.model.eval()
    size = img_size or (built.input_size[-1] if built.input_size else DEFAULT_IMG_SIZE)
    prepared = Prepared(target, built.source, size, _params(model), _gmacs(model, size))
    for runtime in runtimes:
        if runtime == "eager":
            prepared.runners[runtime] = Runner(runtime, module=model)
        else:
            progress.note(f"{target.name}: exporting for {runtime} and checking parity")
            prepared.runners[runtime] = _export(model, runtime, folder, size, device, threads,
                                                progress, prepared.notes)
    return prepared


def scratch_folder() -> tempfile.TemporaryDirectory:
    """Where on-the-fly exports live while their settings run (removed afterwards)."""
    return tempfile.TemporaryDirectory(prefix="tb-benchmark-")
