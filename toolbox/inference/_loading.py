"""Loading a trained model for inference, and the batched forward pass predict and evaluate share.

Images go through `toolbox.preprocess.eval_tensor` with the model file's own `ModelMeta`, exactly
as `tb finetune` validates, so the numbers here match the ones the run recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolbox import runs
from toolbox.errors import ToolboxError
from toolbox.images import ImageReadError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from toolbox.inference.exported import OnnxModel
    from toolbox.models import ModelMeta


@dataclass
class LoadedModel:
    """A model ready for inference, with what describes it.

    `model` is a PyTorch module, or an `OnnxModel` (an export run by onnxruntime) whose `meta`
    describes its outside preprocessing; both take a preprocessed batch and return `output`.
    """

    model: nn.Module | OnnxModel
    meta: ModelMeta
    class_names: list[str]
    model_file: Path | None  # None for a pretrained model taken by name
    run_dir: Path | None  # the run folder the file belongs to, when there is one
    device: torch.device  # where batches go (the CPU for onnxruntime, which copies them itself)
    output: str = "logits"  # or "probabilities" (an export made with --softmax)
    runtime: str = "torch"  # or "onnxruntime"

    @property
    def device_name(self) -> str:
        """Where the model runs, as results report it."""
        if self.runtime == "onnxruntime":
            return f"onnxruntime {self.model.provider.removesuffix('ExecutionProvider')}"
        return str(self.device)


def run_dir_of(model_file: Path) -> Path | None:
    """The run folder holding `model_file` (RUN/model.safetensors or RUN/checkpoints/*.pt)."""
    for folder in (model_file.parent, model_file.parent.parent):
        if folder.name == runs.CHECKPOINT_DIR:
            continue
        if any((folder / name).exists() for name in
               (runs.ARGS_FILE, runs.METRICS_FILE, runs.MODEL_FILE, runs.CHECKPOINT_DIR)):
            return folder
    return None


def load_for_inference(*, run: str | Path | None = None, checkpoint: str | Path | None = None,
                       model: str | None = None, device: str = "auto") -> LoadedModel:
    """Load the model of a run folder (best weights), of one model file, or a pretrained model
    by name (its own classes, e.g. ImageNet's), in eval mode.

    Raises:
        ToolboxError: not exactly one source given, no model in the run, a file without tb
            metadata, or a pretrained model whose weights or class names cannot be had.
    """
    from toolbox.devices import resolve_device
    from toolbox.models import load_model_file, pretrained_classifier

    if sum(source is not None for source in (run, checkpoint, model)) != 1:
        raise ToolboxError("give exactly one of a run folder, a checkpoint file or a model name",
                           "use --run RUN_DIR, --checkpoint FILE or --model NAME")
    model_file: Path | None = None
    run_dir: Path | None = None
    if run is not None:
        run = Path(run)
        if not run.is_dir():
            raise ToolboxError(f"no such run folder: {run}",
                               "pass the folder `tb finetune` wrote (or --checkpoint FILE)")
        model_file = runs.find_model_file(run)
        run_dir = run
    elif checkpoint is not None:
        model_file = Path(checkpoint)
        if not model_file.is_file():
            raise ToolboxError(f"no such model file: {model_file}",
                               "pass a .safetensors, .pt or .onnx file written by tb")
        run_dir = run_dir_of(model_file.resolve())
        if model_file.suffix.lower() == ".onnx":
            return _load_onnx(model_file, run_dir, device)
    torch_device = resolve_device(device)
    net, meta = (pretrained_classifier(model) if model is not None
                 else load_model_file(model_file))
    net.eval().to(torch_device)
    return LoadedModel(net, meta, _class_names(meta, model_file or model), model_file, run_dir,
                       torch_device)


def _class_names(meta: ModelMeta, model_file: Path | str) -> list[str]:
    names = list(meta.class_names) or [str(i) for i in range(meta.num_classes)]
    if len(names) != meta.num_classes:
        raise ToolboxError(f"{model_file} names {len(names)} classes but its head has "
                           f"{meta.num_classes} outputs", "the file's metadata is inconsistent")
    return names


def _load_onnx(model_file: Path, run_dir: Path | None, device: str) -> LoadedModel:
    """An ONNX export, run by onnxruntime (CUDA provider when present and not --device cpu)."""
    import torch

    from toolbox.inference.exported import load_onnx

    onnx_file = load_onnx(model_file, device)
    return LoadedModel(onnx_file.model, onnx_file.meta,
                       _class_names(onnx_file.meta, model_file), model_file, run_dir,
                       torch.device("cpu"), output=onnx_file.output, runtime="onnxruntime")


class _Items:
    """A torch-style dataset: index -> (index, preprocessed tensor or None, error or None)."""

    def __init__(self, count: int, get_image: Callable[[int], np.ndarray], meta: ModelMeta):
        self.count, self.get_image, self.meta = count, get_image, meta

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        from toolbox.preprocess import eval_tensor

        try:
            return index, eval_tensor(self.get_image(index), self.meta), None
        except ImageReadError as exc:
            return index, None, exc.reason


def _collate_readable(items: Sequence[tuple[int, Any, str | None]]
             ) -> tuple[list[int], Any, list[tuple[int, str]]]:
    import torch

    good = [(i, t) for i, t, err in items if err is None]
    bad = [(i, err) for i, _, err in items if err is not None]
    batch = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], batch, bad


@dataclass
class Batch:
    """One forward pass: item indices, their class probabilities, and items that failed."""

    indices: list[int]
    probs: torch.Tensor  # (len(indices), num_classes) float32 on the CPU
    failed: list[tuple[int, str]]  # (item index, reason)
    # log_softmax of the logits: losses and temperature scaling without log(0) underflow
    log_probs: torch.Tensor | None = None


def loader_workers(count: int, batch_size: int, workers: int | None) -> int:
    """Loader processes: none for a single batch (start-up would cost more than it saves)."""
    from toolbox.devices import default_workers

    if workers is not None:
        return max(0, workers)
    if count <= batch_size:
        return 0
    return default_workers(cap=4)


def predict_batches(loaded: LoadedModel, count: int, get_image: Callable[[int], np.ndarray], *,
                    batch_size: int = 32, amp: bool = False, workers: int | None = None
                    ) -> Iterator[Batch]:
    """Read, preprocess and classify `count` items in batches; unreadable items are reported
    in `Batch.failed` instead of stopping the run."""
    import torch
    from torch.utils.data import DataLoader

    from toolbox.devices import autocast_dtype, autocast_off_reason

    if batch_size < 1:
        raise ToolboxError(f"batch size must be at least 1, got {batch_size}")
    if amp and loaded.runtime != "torch":
        raise ToolboxError(f"--amp does not apply to {loaded.runtime}",
                           "an ONNX export runs in the precision it was exported in")
    num_workers = loader_workers(count, batch_size, workers)
    loader = DataLoader(_Items(count, get_image, loaded.meta), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, collate_fn=_collate_readable,
                        pin_memory=loaded.device.type == "cuda")
    device = loaded.device
    amp_dtype = autocast_dtype(device.type)
    amp = amp and autocast_off_reason(device.type) is None
    with torch.inference_mode():
        for indices, batch, failed in loader:
            if batch is None:
                empty = torch.empty(0, len(loaded.class_names))
                yield Batch([], empty, failed, empty)
                continue
            batch = batch.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp):
                out = loaded.model(batch)
            if loaded.output == "probabilities":
                log_probs = out.float().clamp_min(torch.finfo(torch.float32).tiny).log()
            else:
                log_probs = torch.log_softmax(out.float(), dim=1)
            log_probs = log_probs.cpu()
            yield Batch(indices, log_probs.exp(), failed, log_probs)
