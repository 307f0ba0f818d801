"""`tb evaluate`'s pictures of what the model learned: the top-loss grid (with CAM overlays on
request), the most-confused pairs, the reliability diagram and ECE, and the temperature fit.

`Outcomes` gathers what each evaluated sample needs (a few numbers, and the full
log-probabilities only when a temperature is to be fitted), batch by batch in the evaluation
loop; `make_pictures` turns them into files once the loop is done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolbox.images import ImageReadError, write_image
from toolbox.inference.calibration import (
    Calibration,
    Reliability,
    StoredCalibration,
    calibration_path,
    fit_temperature,
    reliability,
    save_calibration,
)
from toolbox.inference.top_losses import (
    ConfusedPair,
    TopLoss,
    highest,
    loss_caption,
    most_confused,
    panel_grid,
)

if TYPE_CHECKING:
    import torch

    from toolbox.inference._loading import LoadedModel
    from toolbox.inference.cam import CamMaker

TOP_LOSSES_PNG = "top_losses.png"
RELIABILITY_PNG = "reliability.png"
CAM_DIR = "cam"  # the evaluation folder's sub-folder for the top losses' overlays


class Outcomes:
    """Per evaluated sample: its item index, label, prediction, confidence and loss."""

    def __init__(self, keep_log_probs: bool = False) -> None:
        self.keep_log_probs = keep_log_probs
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._log_probs: list[torch.Tensor] = []

    def add(self, indices: list[int], log_probs: torch.Tensor, labels: torch.Tensor) -> None:
        """One batch: item indices, (N, C) log-probabilities, (N,) true class indices."""
        if not indices:
            return
        top, pred = log_probs.max(dim=1)
        true = log_probs.gather(1, labels.view(-1, 1)).view(-1)
        self._parts.append((np.asarray(indices), labels.numpy(), pred.numpy(),
                            top.exp().numpy(), (-true).double().numpy()))
        if self.keep_log_probs:
            self._log_probs.append(log_probs)

    def column(self, which: int) -> np.ndarray:
        """One of the per-sample arrays, over every batch added so far."""
        if not self._parts:
            return np.zeros(0)
        return np.concatenate([part[which] for part in self._parts])

    @property
    def items(self) -> np.ndarray:
        return self.column(0).astype(np.int64)

    @property
    def labels(self) -> np.ndarray:
        return self.column(1).astype(np.int64)

    @property
    def preds(self) -> np.ndarray:
        return self.column(2).astype(np.int64)

    @property
    def confidences(self) -> np.ndarray:
        return self.column(3)

    @property
    def losses(self) -> np.ndarray:
        return self.column(4)

    def log_probs(self) -> torch.Tensor:
        import torch

        return torch.cat(self._log_probs)


@dataclass
class EvalPictures:
    """What `make_pictures` found and wrote."""

    top_losses: list[TopLoss]
    top_losses_png: Path | None  # None with --top-losses 0
    most_confused: list[ConfusedPair]
    ece: float
    reliability_bins: list
    reliability_png: Path
    temperature: float | None = None  # fitted now (--calibrate) or stored for these weights
    ece_calibrated: float | None = None  # ECE of the probabilities at that temperature
    calibration_file: Path | None = None
    calibration_note: str | None = None  # why a stored calibration file was not used
    cam_method: str | None = None
    cam_layer: str | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)  # TensorBoard tag -> picture


def _calibrated_confidences(outcomes: Outcomes, temperature: float) -> np.ndarray:
    from toolbox.inference.calibration import apply_temperature

    return apply_temperature(outcomes.log_probs(), temperature).max(dim=1).values.numpy()


def _calibration(outcomes: Outcomes, loaded: LoadedModel, data: str, raw: Reliability,
                 calibrate: bool, stored: StoredCalibration | None, pictures: EvalPictures
                 ) -> Reliability | None:
    """Fit and store a temperature (`calibrate`), or use one stored for these weights; returns
    the reliability of the calibrated probabilities (None: no temperature)."""
    import torch

    from toolbox.models import file_sha256

    correct = outcomes.preds == outcomes.labels  # a temperature never changes the top-1
    if calibrate:
        fit = fit_temperature(outcomes.log_probs(), torch.as_tensor(outcomes.labels))
        after = reliability(_calibrated_confidences(outcomes, fit.temperature), correct)
        path = calibration_path(loaded.model_file, loaded.run_dir)
        save_calibration(path, Calibration(
            temperature=fit.temperature, model_file=loaded.model_file.name,
            model_sha256=file_sha256(loaded.model_file), data=data,
            samples=int(correct.size), nll_before=fit.nll_before, nll_after=fit.nll_after,
            ece_before=raw.ece, ece_after=after.ece))
        pictures.temperature, pictures.calibration_file = fit.temperature, path
        pictures.ece_calibrated = after.ece
        return after
    if stored is None:
        return None
    if stored.calibration is None:
        pictures.calibration_note = f"{stored.path} not used: {stored.ignored_because}"
        return None
    temperature = stored.calibration.temperature
    after = reliability(_calibrated_confidences(outcomes, temperature), correct)
    pictures.temperature, pictures.calibration_file = temperature, stored.path
    pictures.ece_calibrated = after.ece
    return after


def make_pictures(outcomes: Outcomes, matrix: np.ndarray, *, loaded: LoadedModel,
                  get_image: Callable[[int], np.ndarray], describe: Callable[[int], str],
                  data: str, out_dir: Path, top_k: int, calibrate: bool = False,
                  stored: StoredCalibration | None = None, cam: CamMaker | None = None
                  ) -> EvalPictures:
    """Write `reliability.png` and `top_losses.png` (the `top_k` highest-loss samples, all of
    them when there are fewer) to `out_dir`; with `cam`, one overlay per top loss in
    `out_dir/cam/`; with `calibrate`, the fitted temperature beside the model (see
    `calibration_path`); else a `stored` calibration's temperature is applied to measure the
    calibrated ECE (`outcomes` then keep their log-probabilities). `get_image` and `describe`
    read and name an item index again."""
    from toolbox.inference.cam import model_view
    from toolbox.inference.plots import reliability_image

    names = loaded.class_names
    correct = outcomes.preds == outcomes.labels
    raw = reliability(outcomes.confidences, correct)
    pictures = EvalPictures([], None, most_confused(matrix, names), raw.ece, raw.bins,
                            out_dir / RELIABILITY_PNG)
    after = _calibration(outcomes, loaded, data, raw, calibrate, stored, pictures)
    diagram = reliability_image(raw.bins, raw.ece, f"{data}: reliability",
                                after.bins if after else None, after.ece if after else None)
    write_image(pictures.reliability_png, diagram)
    pictures.images["reliability"] = diagram
    if top_k <= 0:
        return pictures
    losses = outcomes.losses
    views, classes, items = [], [], []
    for rank, pos in enumerate(highest(losses, top_k), start=1):
        item = int(outcomes.items[pos])
        try:
            image = get_image(item)
        except ImageReadError:  # read a moment ago; changed since: leave it out
            continue
        label, pred = int(outcomes.labels[pos]), int(outcomes.preds[pos])
        items.append(TopLoss(rank, describe(item), names[label], names[pred],
                             float(outcomes.confidences[pos]), float(np.exp(-losses[pos])),
                             float(losses[pos])))
        views.append((image, model_view(image, loaded.meta)))
        classes.append(pred)
    if not items:
        return pictures
    right = [i.true == i.predicted for i in items]
    captions = [loss_caption(i) for i in items]
    grid = panel_grid([v for _, v in views], captions, right).image
    pictures.top_losses_png = write_image(out_dir / TOP_LOSSES_PNG, grid)
    pictures.images["top_losses"] = grid
    if cam is not None:
        overlays, _ = cam.overlays([image for image, _ in views], classes)
        for n, (entry, overlay) in enumerate(zip(items, overlays, strict=True)):
            stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in
                           Path(entry.file).stem)[:60]
            path = write_image(out_dir / CAM_DIR / f"{entry.rank:02d}_{stem}.png", overlay)
            items[n] = dataclasses.replace(entry, cam=str(path))
        pictures.cam_method, pictures.cam_layer = cam.method.name, cam.layer.name
        pictures.images["top_losses_cam"] = panel_grid(overlays, captions, right).image
    pictures.top_losses = items
    return pictures
