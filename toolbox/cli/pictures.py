"""Rendering of `tb evaluate`'s pictures of what the model learned (top losses, most-confused
pairs, calibration) and of `tb predict`'s calibration and heat-map notes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolbox.cli import render

if TYPE_CHECKING:
    from toolbox.inference import EvalResult

MOST_CONFUSED_SHOWN = 10


def show_top_losses(result: EvalResult) -> None:
    """The top-loss and most-confused tables."""
    if result.top_losses:
        cam = any(t.cam for t in result.top_losses)
        rows = [(t.rank, t.file, t.true, t.predicted, f"{t.prob:.1%}", f"{t.true_prob:.1%}",
                 f"{t.loss:.3f}", *([t.cam or "-"] if cam else []))
                for t in result.top_losses]
        render.show(render.table(
            f"Top losses ({len(result.top_losses)} of {result.samples})",
            ["#", "file", "true", "predicted", "prob", "p(true)", "loss",
             *(["heat map"] if cam else [])], rows,
            right=["#", "prob", "p(true)", "loss"]))
    if result.most_confused:
        render.show(render.table(
            "Most confused (true -> predicted)", ["true", "predicted", "count"],
            [(p.true, p.predicted, p.count) for p in result.most_confused[:MOST_CONFUSED_SHOWN]],
            right=["count"]))


def evaluation_rows(result: EvalResult) -> list[tuple[str, Any]]:
    """Key-value rows for the evaluation summary: calibration and the picture files."""
    rows: list[tuple[str, Any]] = [("ECE (15 bins)", f"{result.ece:.2%}")]
    if result.temperature is not None:
        how = "fitted now" if result.calibrated_now else "stored"
        rows += [("temperature", f"{result.temperature:.3f} ({how}, {result.calibration_file})"),
                 ("ECE calibrated", f"{result.ece_calibrated:.2%}")]
    rows.append(("reliability diagram", result.reliability_png))
    rows.append(("top losses", result.top_losses_png or "-"))
    if result.cam_method:
        rows.append(("heat maps", f"{result.cam_method} on layer {result.cam_layer}"))
    return rows


def calibration_note(calibrated: bool, temperature: float | None, path: Any,
                     ignored: str | None) -> None:
    """One line on stderr saying whether `tb predict`'s probabilities are calibrated."""
    if calibrated:
        render.note(f"probabilities calibrated: temperature {temperature:.3f} from {path}")
    elif ignored:
        render.warn(f"probabilities not calibrated: {ignored}")


def show_mask_top_losses(top_losses: list) -> None:
    """The top-loss table of a segmentation evaluation."""
    if top_losses:
        render.show(render.table(
            "Top losses (pixel cross-entropy)", ["#", "file", "loss", "pixel acc"],
            [(t.rank, t.file, f"{t.loss:.3f}", f"{t.pixel_acc:.1%}") for t in top_losses],
            right=["#", "loss", "pixel acc"]))


def export_calibration_note(model_file: Any, source: Any) -> None:
    """Say that an export leaves out the temperature `tb evaluate --calibrate` stored, so that
    its probabilities do not silently differ from `tb predict`'s."""
    from toolbox.inference.calibration import find_calibration

    stored = find_calibration(model_file, source if source.is_dir() else None)
    if stored is not None and stored.calibration is not None:
        render.warn(f"the export is not calibrated: divide its logits by the temperature "
                    f"{stored.calibration.temperature:.4f} of {stored.path} for the "
                    "probabilities `tb predict` reports")
