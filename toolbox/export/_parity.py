"""The parity check: the written export against the PyTorch model on the same real images."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolbox import runs
from toolbox.errors import ToolboxError
from toolbox.progress import Progress

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from toolbox.models import ModelMeta

CHUNK = 16  # images per forward pass: 16 at 224 px keep the check within a few hundred MB


@dataclass
class ParityResult:
    """How far the export agrees with the PyTorch model it came from."""

    images: str  # where the check images came from
    samples: int
    top1_agreement: float  # fraction of images (pixels for segmentation) with the same argmax
    max_abs_diff: float  # largest |export - PyTorch| over every output value
    compared: str  # "logits" or "probabilities"
    tolerance: float  # the least agreement that passes
    passed: bool


class ParityFailed(ToolboxError):
    """The export disagrees with the model; `result` holds the numbers, no file was kept."""

    def __init__(self, result: ParityResult) -> None:
        super().__init__(
            f"the export agrees with the PyTorch model on only {result.top1_agreement:.2%} of "
            f"{result.samples} images (needs {result.tolerance:.2%}); no file was written",
            "try another --opset or --format; --tolerance lowers the bar, --no-check skips it")
        self.result = result


def _spread(total: int, count: int) -> list[int]:
    """`count` indices evenly spread over `total` (class-sorted data: every class is seen)."""
    import numpy as np

    return sorted({int(i) for i in np.linspace(0, total - 1, num=min(count, total)).round()})


def _read_all(load: Callable[[int], np.ndarray], picks: Sequence[int]) -> list[np.ndarray]:
    from toolbox.images import ImageReadError

    images = []
    for index in picks:
        try:
            images.append(load(index))
        except ImageReadError:
            continue  # an unreadable file is not the export's fault; the others still count
    return images


def _shard_images(shards: Any, count: int) -> list[np.ndarray]:
    from toolbox.datasets import read_samples
    from toolbox.images import ImageReadError, read_image_bytes

    images: list[np.ndarray] = []
    for sample in read_samples(shards.urls, shards.classes):
        if len(images) >= count:
            break
        if sample.data is not None:
            try:
                images.append(read_image_bytes(sample.data, sample.key))
            except ImageReadError:
                continue
    return images


def _folder_images(folder: Path, count: int) -> tuple[str, list[np.ndarray]]:
    from toolbox.images import collect_images, read_image

    if not folder.is_dir():
        raise ToolboxError(f"no such folder for --check-data: {folder}",
                           "pass a folder of images (searched recursively)")
    files = [f.path for f in collect_images(folder)]
    images = _read_all(lambda i: read_image(files[i]), _spread(len(files), count))
    return str(folder), images


def _run_val_images(run_dir: Path, count: int) -> tuple[str, list[np.ndarray]]:
    import yaml

    from toolbox.images import read_image
    from toolbox.train import FinetuneConfig

    config = FinetuneConfig.from_dict(yaml.safe_load((run_dir / runs.ARGS_FILE).read_text())
                                      or {})
    if config.task == "segment":
        from toolbox.segment import load_segment_splits

        pairs = load_segment_splits(data=config.data, val_split=config.val_split,
                                    seed=config.seed)
        images = _read_all(lambda i: read_image(pairs.val[i].image),
                           _spread(len(pairs.val), count))
        return f"validation images of the run: {pairs.description}", images
    from toolbox.train.splits import splits_for

    splits = splits_for(config)
    if splits.streamed:  # tar shards: the first readable validation samples
        return f"validation data of the run: {splits.description}", _shard_images(
            splits.val, count)
    images = _read_all(splits.val.load, _spread(len(splits.val), count))
    return f"validation data of the run: {splits.description}", images


def input_geometry(meta: ModelMeta) -> Callable[[np.ndarray, ModelMeta], torch.Tensor]:
    """How the run brings an image to its input size (uint8 CHW): classifiers by the run's
    `--resize` rule (crop, squash, letterbox), segmenters resize the whole frame (every pixel
    has a label)."""
    if meta.task == "segment":
        from toolbox.segment import resize_pair

        return lambda image, m: resize_pair(image, None, m)[0]
    from toolbox.preprocess import resize_crop_uint8

    return resize_crop_uint8


def check_images(*, run_dir: Path | None, check_data: Path | None, count: int
                 ) -> tuple[str, list[np.ndarray]]:
    """(where from, up to `count` RGB uint8 images): `check_data`, else the run's validation set.

    Raises:
        ToolboxError: nowhere to take images from, or not one readable image there.
    """
    if check_data is not None:
        where, images = _folder_images(check_data, count)
    elif run_dir is not None and (run_dir / runs.ARGS_FILE).is_file():
        try:
            where, images = _run_val_images(run_dir, count)
        except ToolboxError as exc:
            raise ToolboxError(f"cannot read the run's validation data for the parity check: "
                               f"{exc.message}", "pass --check-data DIR, or --no-check") from exc
    else:
        raise ToolboxError("no images to check the export against: the model is not in a run "
                           f"folder with its {runs.ARGS_FILE}",
                           "pass --check-data DIR (a folder of images), or --no-check")
    if not images:
        raise ToolboxError(f"no readable image for the parity check in {where}",
                           "pass --check-data DIR (a folder of images), or --no-check")
    return where, images


def compare(model: nn.Module, meta: ModelMeta, run_export: Callable[[np.ndarray], np.ndarray],
            images: Sequence[np.ndarray], *, where: str, softmax: bool, batch: int,
            tolerance: float, progress: Progress) -> ParityResult:
    """Run the PyTorch model (preprocessed exactly as tb does) and the export (fed RGB in
    [0, 1] at the input size) on `images`; agreement of the argmax and the largest difference.
    """
    import numpy as np
    import torch

    from toolbox.preprocess import normalize_uint8

    _, height, width = meta.input_size
    rgb = dataclasses.replace(meta, input_size=(3, height, width))
    geometry = input_geometry(meta)
    agree = total = 0
    worst = 0.0
    progress.start("checking parity", total=len(images), unit="images")
    try:
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            ours = torch.stack([normalize_uint8(geometry(im, meta), meta) for im in chunk])
            theirs = torch.stack([geometry(im, rgb) for im in chunk]).float() / 255
            with torch.inference_mode():
                expected = model(ours).float()
                if softmax:
                    expected = torch.softmax(expected, dim=1)
            got = torch.from_numpy(np.asarray(run_export(theirs.numpy()))).float()
            if got.shape != expected.shape:
                raise ToolboxError(f"the export returns shape {tuple(got.shape)}, the model "
                                   f"{tuple(expected.shape)}", "try --format torchscript")
            same = got.argmax(dim=1) == expected.argmax(dim=1)
            agree += int(same.sum())
            total += same.numel()
            diff = (got - expected).abs()
            # NaN never compares greater, so a broken graph would otherwise look perfect.
            worst = max(worst, float(diff.max()) if bool(diff.isfinite().all()) else math.inf)
            progress.advance(len(chunk))
    finally:
        progress.finish()
    agreement = agree / total
    return ParityResult(images=where, samples=len(images), top1_agreement=agreement,
                        max_abs_diff=worst, compared="probabilities" if softmax else "logits",
                        tolerance=tolerance, passed=agreement >= tolerance)
