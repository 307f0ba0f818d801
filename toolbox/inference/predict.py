"""`tb predict`'s service: classify image files with a trained model, skipping bad files."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.errors import ToolboxError, UsageError
from toolbox.fileio import atomic_write_text
from toolbox.images import ImageFile, collect_images, not_an_image
from toolbox.progress import NullProgress, Progress
from toolbox.sources import SkippedFile


@dataclass(frozen=True)
class Guess:
    """One of the top-k classes for an image."""

    label: str
    index: int
    prob: float


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, most probable first (and its heat map, with --cam)."""

    file: str
    top: list[Guess]
    cam: str | None = None


class NothingPredicted(ToolboxError):
    """Not one input could be predicted; `result` still lists every skipped input."""

    def __init__(self, message: str, hint: str | None, result: PredictResult) -> None:
        super().__init__(message, hint)
        self.result = result


class PredictionRate:
    """`images_per_s` of a result that lists its `predictions` and the `seconds` they took
    (image classes here, masks in `toolbox.segment`)."""

    predictions: list
    seconds: float

    @property
    def images_per_s(self) -> float:
        return len(self.predictions) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class PredictResult(PredictionRate):
    """What `predict_images` did."""

    model: str  # the architecture (with its pretrained tag when one was named)
    model_file: Path | None  # None for a pretrained model taken by name
    device: str
    topk: int
    predictions: list[Prediction] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0
    # Probabilities divided by the temperature `tb evaluate --calibrate` stored for these
    # weights; a calibration file fitted for other weights is named with why it was not used.
    calibrated: bool = False
    temperature: float | None = None
    calibration_file: Path | None = None
    calibration_ignored: str | None = None
    cam_method: str | None = None
    cam_layer: str | None = None
    out: Path | None = None


def output_names(files: Sequence[Path]) -> list[str]:
    """A distinct output stem per input (the file's stem; `stem-2`... when stems repeat)."""
    seen: dict[str, int] = {}
    names = []
    for path in files:
        n = seen.get(path.stem, 0) + 1
        seen[path.stem] = n
        names.append(path.stem if n == 1 else f"{path.stem}-{n}")
    return names


def check_outputs(out: Path, names: Sequence[str], suffixes: Sequence[str],
                  files: Sequence[Path]) -> None:
    """Refuse outputs `out/<name><suffix>` that would overwrite one of the inputs."""
    inputs = {path.resolve() for path in files}
    for name in names:
        for suffix in suffixes:
            if (out / f"{name}{suffix}").resolve() in inputs:
                raise ToolboxError(f"writing {out / (name + suffix)} would overwrite an input",
                                   "choose another --out folder")


def display_path(path: Path) -> str:
    """`path` relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def gather_inputs(sources: Sequence[str | Path]) -> tuple[list[Path], list[SkippedFile]]:
    """Image files from files, folders and globs (deduplicated, in the order given); sources
    that do not exist or match nothing are reported instead of stopping the others."""
    files: dict[Path, None] = {}
    missing: list[SkippedFile] = []
    for src in sources:
        others: list[ImageFile] = []
        try:
            found = collect_images(src, others)
        except ToolboxError:
            missing.append(SkippedFile(str(src), "no such file or folder"))
            continue
        missing += [SkippedFile(display_path(o.path), not_an_image(o.path)) for o in others]
        if not found and not others:
            missing.append(SkippedFile(str(src), "matched no files"))
        for item in found:
            files.setdefault(item.path, None)
    return list(files), missing


def predict_images(sources: Sequence[str | Path], *, run: str | Path | None = None,
                   checkpoint: str | Path | None = None, model: str | None = None,
                   topk: int = 5, batch_size: int = 32,
                   device: str = "auto", amp: bool = False, workers: int | None = None,
                   csv_path: str | Path | None = None, cam: str | None = None,
                   cam_layer: str | None = None, out: str | Path | None = None,
                   tensorboard: str | Path | None = None, progress: Progress | None = None
                   ) -> PredictResult:
    """Classify the images in `sources` with the model of `run`, the file `checkpoint`, or the
    pretrained model named `model` (ImageNet classes, offline from the hub cache or a package).

    Preprocessing and class names come from the model file (or the pretrained config).
    Unreadable files are reported in `skipped` and the others still predicted. With `csv_path`,
    one row per input is written atomically (skipped files carry their reason in the `error`
    column).

    A temperature stored for these weights by `tb evaluate --calibrate` divides the logits
    (`calibrated` says so). With `cam` (a method of `toolbox.inference.cam`), a heat map of the
    top class is drawn over each image as `out/<stem>.cam.png`, and with `tensorboard` also
    logged there as image grids.

    Raises:
        NothingPredicted: no inputs at all, or not a single image could be predicted.
        ToolboxError: no usable model; CAM on an ONNX file or without a target layer; an
            output that would overwrite an input.
    """
    from toolbox.inference._loading import load_for_inference, predict_batches
    from toolbox.inference.calibration import apply_temperature, find_calibration
    from toolbox.sources import FileReader

    progress = progress or NullProgress()
    if topk < 1:
        raise UsageError(f"--topk must be at least 1, got {topk}")
    if cam is not None and out is None:
        raise UsageError("--cam writes one heat-map PNG per image: give --out DIR",
                         param="--out")
    loaded = load_for_inference(run=run, checkpoint=checkpoint, model=model, device=device)
    maker = _cam_maker(loaded, cam, cam_layer)
    files, skipped = gather_inputs(sources)
    k = min(topk, len(loaded.class_names))
    result = PredictResult(loaded.meta.model, loaded.model_file, loaded.device_name, k,
                           skipped=skipped, out=Path(out) if out is not None else None)
    stored = find_calibration(loaded.model_file, loaded.run_dir)
    if stored is not None:
        result.calibration_file = stored.path
        result.calibration_ignored = stored.ignored_because
        if stored.calibration is not None:
            result.calibrated, result.temperature = True, stored.calibration.temperature
    if maker is not None:
        result.cam_method, result.cam_layer = maker.method.name, maker.layer.name
        check_outputs(result.out, output_names(files), (CAM_SUFFIX,), files)
    if not files:
        raise NothingPredicted("no image files to predict",
                               "pass image files, folders or quoted globs", result)
    start = time.perf_counter()
    progress.start("predicting", total=len(files), unit="images")
    by_index: dict[int, Prediction | SkippedFile] = {}
    try:
        for batch in predict_batches(loaded, len(files), FileReader(files),
                                     batch_size=batch_size, amp=amp, workers=workers):
            probs = (apply_temperature(batch.log_probs, result.temperature)
                     if result.calibrated else batch.probs)
            values, indices = probs.topk(k, dim=1)
            for row, item in enumerate(batch.indices):
                top = [Guess(loaded.class_names[int(c)], int(c), float(p))
                       for p, c in zip(values[row], indices[row], strict=True)]
                by_index[item] = Prediction(display_path(files[item]), top)
            for item, reason in batch.failed:
                by_index[item] = SkippedFile(display_path(files[item]), reason)
            progress.advance(len(batch.indices) + len(batch.failed))
    finally:
        progress.finish()
    result.seconds = time.perf_counter() - start
    for item in sorted(by_index):
        entry = by_index[item]
        (result.predictions if isinstance(entry, Prediction) else result.skipped).append(entry)
    if maker is not None:
        try:
            result.predictions = _draw_cams(maker, result.predictions, files, by_index,
                                            result.out, tensorboard, progress)
        finally:
            maker.close()
    if csv_path is not None:
        atomic_write_text(csv_path, predictions_csv(result))
    if not result.predictions:
        raise NothingPredicted(f"no image could be predicted: all {len(result.skipped)} "
                               "inputs were skipped", "check that the files are images", result)
    return result


CAM_SUFFIX = ".cam.png"
CAM_GRID = 64  # heat maps per TensorBoard image


def _cam_maker(loaded, cam: str | None, layer: str | None):
    if cam is None:
        if layer is not None:
            raise UsageError("--cam-layer goes with --cam METHOD", param="--cam-layer")
        return None
    from toolbox.inference.cam import CamMaker

    return CamMaker(loaded, cam, layer)


def _draw_cams(maker, predictions: list[Prediction], files: Sequence[Path],
               by_index: dict, out: Path, tensorboard: str | Path | None, progress: Progress
               ) -> list[Prediction]:
    """Write a heat map of each prediction's top class; returns the predictions with them."""
    from toolbox.images import ImageReadError, read_image, write_image
    from toolbox.tensorboard import image_grid

    names = output_names(files)
    where = {id(entry): i for i, entry in by_index.items()}
    drawn, overlays = [], []
    progress.start(f"heat maps ({maker.method.name})", total=len(predictions), unit="images")
    try:
        for pred in predictions:
            i = where[id(pred)]
            try:
                image = read_image(files[i])
            except ImageReadError:  # read a moment ago; changed since: no heat map for it
                image = None
            if image is None:
                drawn.append(pred)
            else:
                overlay = maker.overlays([image], [pred.top[0].index])[0][0]
                path = write_image(out / f"{names[i]}{CAM_SUFFIX}", overlay)
                drawn.append(Prediction(pred.file, pred.top, display_path(path)))
                overlays.append(overlay)
            progress.advance(1)
    finally:
        progress.finish()
    if tensorboard is not None and overlays:
        from toolbox.tensorboard import add_image, summary_writer

        with summary_writer(tensorboard) as writer:
            for step, first in enumerate(range(0, len(overlays), CAM_GRID)):
                grid = image_grid(overlays[first:first + CAM_GRID], size=(224, 224))
                add_image(writer, f"predict/cam_{maker.method.name}", grid, step=step)
    return drawn


def predictions_csv(result: PredictResult) -> str:
    """The CSV text: file, label_1, prob_1, ..., label_k, prob_k, error."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["file"]
    for rank in range(1, result.topk + 1):
        header += [f"label_{rank}", f"prob_{rank}"]
    writer.writerow([*header, "error"])
    for pred in result.predictions:
        row: list[object] = [pred.file]
        for guess in pred.top:
            row += [guess.label, f"{guess.prob:.6f}"]
        writer.writerow([*row, ""])
    for skip in result.skipped:
        writer.writerow([skip.path, *([""] * (2 * result.topk)), skip.reason])
    return out.getvalue()
