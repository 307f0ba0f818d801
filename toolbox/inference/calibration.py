"""Can the probabilities be trusted: expected calibration error, reliability bins, and one
temperature fitted on held-out data (Guo et al. 2017, "On Calibration of Modern Neural Networks")
and stored with the run, so that `tb predict` reports calibrated probabilities.

Everything works on log-probabilities (the log-softmax of the logits): dividing them by T gives
the same softmax as dividing the logits by T (the two differ by one constant per row), and an
export that outputs probabilities yields them too, so ONNX files are calibrated alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolbox import runs
from toolbox.errors import ToolboxError
from toolbox.fileio import atomic_write_text

if TYPE_CHECKING:
    import torch

ECE_BINS = 15  # Guo et al.'s choice, the one most papers report
METHOD = "temperature scaling: one T for all classes, LBFGS on the NLL (Guo et al. 2017)"


@dataclass(frozen=True)
class ReliabilityBin:
    """Predictions whose confidence lies in (lower, upper]; the first bin also holds 0."""

    lower: float
    upper: float
    count: int
    confidence: float | None  # mean top-1 probability in the bin (None: empty bin)
    accuracy: float | None  # share of the bin's predictions that were right


@dataclass(frozen=True)
class Reliability:
    """The expected calibration error and the bins it was computed from."""

    ece: float
    bins: list[ReliabilityBin]


def reliability(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
                ) -> Reliability:
    """ECE = sum over equal-width confidence bins of (bin share) * |accuracy - confidence|.

    `confidences` are the top-1 probabilities, `correct` whether each top-1 was right.
    """
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    hit = np.asarray(correct, dtype=bool).reshape(-1)
    if conf.size == 0:
        raise ValueError("no predictions to measure calibration on")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # searchsorted 'left' puts a value equal to an edge into the bin below it: (lower, upper].
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        member = which == b
        count = int(member.sum())
        if count:
            mean_conf, acc = float(conf[member].mean()), float(hit[member].mean())
            ece += count / conf.size * abs(acc - mean_conf)
            out.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), count, mean_conf,
                                      acc))
        else:
            out.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), 0, None, None))
    return Reliability(float(ece), out)


def nll(log_probs: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(log_probs / temperature)."""
    import torch.nn.functional as F

    return float(F.cross_entropy(log_probs.double() / temperature, labels))


@dataclass(frozen=True)
class TemperatureFit:
    """One fitted temperature and the validation NLL before and after it."""

    temperature: float
    nll_before: float
    nll_after: float


def fit_temperature(log_probs: torch.Tensor, labels: torch.Tensor, max_iter: int = 100
                    ) -> TemperatureFit:
    """The T > 0 that minimises the NLL of softmax(log_probs / T), by LBFGS.

    T is optimised as log T, so it stays positive without a constraint. The NLL is convex in
    1/T, so LBFGS finds the one minimum; should it ever stop worse than T = 1, T = 1 is kept:
    the fit never raises the NLL it is judged on.
    """
    import torch
    import torch.nn.functional as F

    if log_probs.shape[0] == 0:
        raise ToolboxError("no predictions to calibrate on", "evaluate on labelled data")
    z = log_probs.detach().double()
    y = labels.detach().long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    before = nll(z, y)
    temperature = float(log_t.detach().exp())
    after = nll(z, y, temperature)
    if not np.isfinite(after) or after > before:
        temperature, after = 1.0, before
    return TemperatureFit(temperature, before, after)


def apply_temperature(log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probabilities softmax(log_probs / temperature)."""
    import torch

    return torch.softmax(log_probs.float() / temperature, dim=1)


@dataclass(frozen=True)
class Calibration:
    """What RUN/calibration.json holds: the temperature and the weights it was fitted for."""

    temperature: float
    model_file: str  # the file's name (its place in the run)
    model_sha256: str  # the weights it belongs to: retrained or other weights are not scaled
    data: str  # what it was fitted on
    samples: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    method: str = METHOD


def calibration_path(model_file: Path, run_dir: Path | None) -> Path:
    """Where the calibration of `model_file` lives: the run folder, else beside the file."""
    return (run_dir if run_dir is not None else model_file.parent) / runs.CALIBRATION_FILE


def save_calibration(path: Path, calibration: Calibration) -> Path:
    """Write `calibration` to `path` atomically (replacing an earlier fit) and return it."""
    return atomic_write_text(path, json.dumps(asdict(calibration), indent=2) + "\n")


@dataclass(frozen=True)
class StoredCalibration:
    """The calibration found for a model file: applied (`calibration` set) or why not."""

    path: Path
    calibration: Calibration | None
    ignored_because: str | None = None


def find_calibration(model_file: Path | None, run_dir: Path | None) -> StoredCalibration | None:
    """The stored temperature for `model_file`, when there is a calibration file beside it.

    A file fitted for other weights (another checkpoint, or the run trained again since) is
    reported with the reason it is ignored, never applied.
    """
    from toolbox.models import file_sha256

    if model_file is None:
        return None
    path = calibration_path(model_file, run_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        calibration = Calibration(**data)
        temperature = float(calibration.temperature)
    except (ValueError, TypeError) as exc:
        return StoredCalibration(path, None, f"it cannot be read ({exc})")
    if not np.isfinite(temperature) or temperature <= 0:
        return StoredCalibration(path, None, f"its temperature {temperature} is not positive")
    if calibration.model_sha256 != file_sha256(model_file):
        why = (f"{calibration.model_file} has changed since" if
               calibration.model_file == model_file.name else
               f"it belongs to {calibration.model_file}, not {model_file.name}")
        return StoredCalibration(path, None, f"it was fitted for other weights ({why})")
    return StoredCalibration(path, calibration)
