"""`tb predict` and `tb evaluate` for segmentation runs: palette masks and overlays, IoU/Dice.

Images are resized to the run's input size as in training (`resize_pair`); predicted masks are
brought back to each image's own size (logits resized bilinearly, then argmax), while
evaluation scores at the input size, the resolution `tb finetune` validated at, so its mIoU
equals the run's on the same data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolbox import runs
from toolbox.errors import ToolboxError
from toolbox.fileio import atomic_write_text
from toolbox.images import ImageReadError, read_image, write_image
from toolbox.inference import (
    LoadedModel,
    NothingPredicted,
    PredictionRate,
    load_for_inference,
)
from toolbox.inference.predict import check_outputs, display_path, gather_inputs, output_names
from toolbox.jsonable import to_jsonable
from toolbox.progress import NullProgress, Progress
from toolbox.segment.data import find_pairs, read_pair, resize_pair
from toolbox.segment.metrics import confusion, scores
from toolbox.segment.overlay import overlay, write_palette_png
from toolbox.segment.top_losses import MaskTopLoss, WorstImages
from toolbox.sources import SkippedFile, skipped_json

if TYPE_CHECKING:
    import torch

MASK_SUFFIX = ".png"
OVERLAY_SUFFIX = ".overlay.png"


def is_segmentation_model(*, run: str | Path | None = None,
                          checkpoint: str | Path | None = None) -> bool:
    """Whether the run's (or file's) model segments; reads only the file's metadata."""
    from toolbox.models import read_meta

    try:
        path = runs.find_model_file(run) if run is not None else Path(checkpoint)
        if path.suffix.lower() == ".onnx" and path.is_file():
            from toolbox.inference.exported import export_task

            return export_task(path) == "segment"
        meta = read_meta(path) if path.suffix in (".safetensors", ".pt", ".pth") else None
    except (ToolboxError, OSError):
        return False  # the classification loader says what is wrong with it
    return meta is not None and meta.task == "segment"


def _logits(loaded: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float32 logits on the CPU for a uint8 batch at the input size."""
    import torch

    from toolbox.preprocess import normalize_uint8

    with torch.inference_mode():
        x = normalize_uint8(batch.to(loaded.device), loaded.meta)
        return loaded.model(x).float().cpu()


@dataclass(frozen=True)
class MaskPrediction:
    """One image's predicted mask: where it was written and how much of each class it holds."""

    file: str
    mask: str
    overlay: str
    size: tuple[int, int]  # (height, width)
    class_fractions: dict[str, float]  # share of the image's pixels, classes present only


@dataclass
class MaskPredictResult(PredictionRate):
    """What `predict_masks` did."""

    model_file: Path
    device: str
    out: Path
    predictions: list[MaskPrediction] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0


def predict_masks(sources: Sequence[str | Path], *, out: str | Path,
                  run: str | Path | None = None, checkpoint: str | Path | None = None,
                  batch_size: int = 16, device: str = "auto",
                  progress: Progress | None = None) -> MaskPredictResult:
    """Segment the images in `sources`: `out/<stem>.png` (palette PNG of class indices, at the
    image's own size) and `out/<stem>.overlay.png` (the mask coloured over the image).

    Raises:
        NothingPredicted: no inputs, or not one could be read.
        ToolboxError: no usable model; an output that would overwrite an input.
    """
    import torch
    import torch.nn.functional as F

    progress = progress or NullProgress()
    loaded = load_for_inference(run=run, checkpoint=checkpoint, device=device)
    out = Path(out)
    files, skipped = gather_inputs(sources)
    result = MaskPredictResult(loaded.model_file, str(loaded.device), out, skipped=skipped)
    if not files:
        raise NothingPredicted("no image files to predict",
                               "pass image files, folders or quoted globs", result)
    names = output_names(files)
    check_outputs(out, names, (MASK_SUFFIX, OVERLAY_SUFFIX), files)
    start = time.perf_counter()
    progress.start("segmenting", total=len(files), unit="images")
    try:
        for first in range(0, len(files), batch_size):
            chunk = range(first, min(first + batch_size, len(files)))
            images, tensors = {}, []
            for i in chunk:
                try:
                    images[i] = read_image(files[i])
                except ImageReadError as exc:
                    result.skipped.append(SkippedFile(display_path(files[i]), exc.reason))
                    continue
                tensors.append(resize_pair(images[i], None, loaded.meta)[0])
            if tensors:
                logits = _logits(loaded, torch.stack(tensors))
                for row, (i, image) in enumerate(images.items()):
                    height, width = image.shape[:2]
                    full = F.interpolate(logits[row:row + 1], size=(height, width),
                                         mode="bilinear", align_corners=False)
                    mask = full.argmax(dim=1)[0].numpy().astype(np.uint8)
                    result.predictions.append(_write_prediction(
                        files[i], names[i], image, mask, out, loaded.class_names))
            progress.advance(len(chunk))
    finally:
        progress.finish()
    result.seconds = time.perf_counter() - start
    if not result.predictions:
        raise NothingPredicted(f"no image could be predicted: all {len(result.skipped)} "
                               "inputs were skipped", "check that the files are images", result)
    return result


def _write_prediction(path: Path, name: str, image: np.ndarray, mask: np.ndarray, out: Path,
                      class_names: list[str]) -> MaskPrediction:
    mask_path = write_palette_png(out / f"{name}{MASK_SUFFIX}", mask)
    overlay_path = write_image(out / f"{name}{OVERLAY_SUFFIX}", overlay(image, mask))
    counts = np.bincount(mask.reshape(-1), minlength=len(class_names))
    fractions = {class_names[c]: float(counts[c] / mask.size) for c in np.flatnonzero(counts)}
    return MaskPrediction(display_path(path), display_path(mask_path),
                          display_path(overlay_path), (int(mask.shape[0]), int(mask.shape[1])),
                          fractions)


@dataclass(frozen=True)
class ClassIoU:
    """Scores of one class; None where the class is neither in the masks nor predicted."""

    name: str
    iou: float | None
    dice: float | None
    pixels: int  # pixels of the class in the true masks


@dataclass
class MaskEvalResult:
    """What `evaluate_masks` measured and where it wrote it."""

    model_file: Path
    run_dir: Path | None
    data: str
    device: str
    images: int
    pixel_acc: float
    miou: float
    mean_dice: float
    classes: list[ClassIoU]
    confusion_matrix: list[list[int]]
    confusion_png: Path
    metrics_json: Path
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0
    top_losses: list[MaskTopLoss] = field(default_factory=list)
    top_losses_png: Path | None = None


def _held_out(data: Path, split: str | None) -> Path:
    if split is not None:
        return data / split
    _, held_out = runs.split_folders(data)
    return held_out if held_out is not None else data


def _nan_to_none(value: float) -> float | None:
    return None if value != value else value


def evaluate_masks(*, data: str | Path, run: str | Path | None = None,
                   checkpoint: str | Path | None = None, split: str | None = None,
                   batch_size: int = 16, device: str = "auto", out: str | Path | None = None,
                   top_losses: int = 16, progress: Progress | None = None) -> MaskEvalResult:
    """Score a segmentation model on `data`'s held-out pairs (DIR/val or DIR/test, or
    DIR/`split`, or DIR itself with images/ and masks/): per-class IoU and Dice, mIoU, pixel
    accuracy, and the pixel confusion matrix as `<tag>_confusion.png` and in the metrics JSON
    in `out` (default RUN/eval); the `top_losses` images of highest pixel cross-entropy with
    their true and predicted masks as `top_losses.png` there.

    Raises:
        ToolboxError: no model, no pairs, a mask with classes the model does not have.
    """
    import torch

    from toolbox.inference.evaluate import safe_tag
    from toolbox.inference.plots import confusion_image
    from toolbox.segment.data import check_pairs

    progress = progress or NullProgress()
    loaded = load_for_inference(run=run, checkpoint=checkpoint, device=device)
    names = loaded.class_names
    folder = _held_out(Path(data), split)
    pairs, bad = find_pairs(folder, Path(data))
    pairs, more_bad, _ = check_pairs(pairs, len(names), root=Path(data))
    skipped = bad + more_bad
    if not pairs:
        raise ToolboxError(f"{folder} has no usable image/mask pair ({len(skipped)} skipped)",
                           "masks must match the images' names and the model's classes")
    matrix = torch.zeros((len(names), len(names)), dtype=torch.int64)
    scored = 0
    worst = WorstImages(top_losses)
    start = time.perf_counter()
    progress.start(f"evaluating {folder}", total=len(pairs), unit="images")
    try:
        for first in range(0, len(pairs), batch_size):
            images, masks, files = [], [], []
            for pair in pairs[first:first + batch_size]:
                try:
                    image, mask = resize_pair(*read_pair(pair), loaded.meta)
                except ImageReadError as exc:
                    skipped.append(SkippedFile(display_path(exc.path), exc.reason))
                    continue
                images.append(image)
                masks.append(mask)
                files.append(display_path(pair.image))
            if images:
                logits = _logits(loaded, torch.stack(images))
                matrix += confusion(logits.argmax(dim=1), torch.stack(masks), len(names))
                worst.add(files, torch.stack(images), torch.stack(masks), logits)
                scored += len(images)
            progress.advance(len(pairs[first:first + batch_size]))
    finally:
        progress.finish()
    seconds = time.perf_counter() - start
    result = scores(matrix.numpy())
    base = loaded.run_dir if loaded.run_dir is not None else loaded.model_file.parent
    out_dir = Path(out) if out is not None else base / "eval"
    tag = safe_tag(f"{Path(data).resolve().name}-{folder.name}")
    png = write_image(out_dir / f"{tag}_confusion.png", confusion_image(
        matrix.numpy(), names, f"{folder}: mIoU {result.miou:.2%} (pixels)"))
    per_class = [ClassIoU(name, _nan_to_none(iou), _nan_to_none(dice), int(row.sum()))
                 for name, iou, dice, row in zip(names, result.iou, result.dice, matrix.numpy(),
                                                 strict=True)]
    evaluation = MaskEvalResult(
        model_file=loaded.model_file, run_dir=loaded.run_dir, data=str(folder),
        device=str(loaded.device), images=scored,
        pixel_acc=result.pixel_acc, miou=result.miou, mean_dice=result.mean_dice,
        classes=per_class, confusion_matrix=result.matrix, confusion_png=png,
        metrics_json=out_dir / f"{tag}_metrics.json", skipped=skipped, seconds=seconds)
    evaluation.top_losses, evaluation.top_losses_png = worst.write(out_dir)
    atomic_write_text(evaluation.metrics_json,
                      json.dumps(mask_eval_dict(evaluation), indent=2) + "\n")
    return evaluation


def mask_eval_dict(result: MaskEvalResult) -> dict:
    """The JSON form of a mask evaluation (what `--json` prints and `<tag>_metrics.json`
    holds); skipped files keep the `file` key that `tb evaluate` has always written."""
    return {**to_jsonable(result), "skipped": skipped_json(result.skipped)}
