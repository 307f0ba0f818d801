"""Pictures of what the model learned: ECE and temperature scaling checked against plain
computations, top-loss grids and reliability diagrams read back (segmentation's too), and the
CLI's flags, files and JSON keys (heat maps: test_cam.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_helpers import read_events
from inference_helpers import (
    COLOURS,
    mixed_folder,
    run_copy,
    shared_run,
)

from toolbox import runs
from toolbox.images import read_image, write_image
from toolbox.inference import evaluate, load_for_inference, predict_images
from toolbox.inference.calibration import fit_temperature, nll, reliability
from toolbox.inference.top_losses import (
    TEXT,
    highest,
    most_confused,
    panel_grid,
)
from toolbox.models import ModelMeta, create_model, save_safetensors

NAMES = sorted(COLOURS)  # blue, green, red


@pytest.fixture
def run(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """Calibration files and TensorBoard events of the test's own (see `run_copy`)."""
    return run_copy(shared_run(tmp_path_factory.mktemp("trained")), tmp_path / "run")


def _plain_ece(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE written out: bins (k/15, (k+1)/15], the first also holding 0."""
    total = 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        members = [i for i, c in enumerate(conf) if (lo < c <= hi) or (k == 0 and c == 0)]
        if members:
            acc = sum(bool(correct[i]) for i in members) / len(members)
            mean_conf = sum(conf[i] for i in members) / len(members)
            total += len(members) / len(conf) * abs(acc - mean_conf)
    return total


def test_ece_matches_a_plain_computation():
    rng = np.random.default_rng(0)
    for size in (1, 7, 500):
        conf = rng.uniform(0.0, 1.0, size)
        correct = rng.uniform(size=size) < conf ** 2  # overconfident on purpose
        measured = reliability(conf, correct)
        assert measured.ece == pytest.approx(_plain_ece(conf, correct), abs=1e-12)
        assert sum(b.count for b in measured.bins) == size and len(measured.bins) == 15
    # By hand: half of the 0.9s right (gap 0.4), both 0.6s right (gap 0.4): ECE 0.4.
    by_hand = reliability(np.array([0.9, 0.9, 0.6, 0.6]), np.array([1, 0, 1, 1]))
    assert by_hand.ece == pytest.approx(0.4)


def _logits(rng: np.random.Generator, n: int, classes: int, sharpness: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities whose true calibration temperature is about `sharpness`: labels are
    drawn from softmax(z), and the model reports z * sharpness."""
    z = torch.as_tensor(rng.normal(0, 2, size=(n, classes)))
    labels = torch.multinomial(torch.softmax(z, dim=1), 1, generator=torch.Generator()
                               .manual_seed(int(rng.integers(1 << 30)))).view(-1)
    return torch.log_softmax(z * sharpness, dim=1), labels


@pytest.mark.parametrize("sharpness", [0.3, 1.0, 3.0])
def test_temperature_never_raises_nll_and_finds_the_minimum(sharpness):
    rng = np.random.default_rng(int(sharpness * 10))
    log_probs, labels = _logits(rng, 800, 5, sharpness)
    fit = fit_temperature(log_probs, labels)
    assert fit.nll_before == pytest.approx(nll(log_probs, labels))
    assert fit.nll_after <= fit.nll_before + 1e-12
    assert fit.nll_after == pytest.approx(nll(log_probs, labels, fit.temperature))
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 200))
    best = min(nll(log_probs, labels, t) for t in grid)
    assert fit.nll_after <= best + 1e-6  # LBFGS reached the minimum a fine grid finds
    # The model was made `sharpness` times too sure: the temperature undoes it.
    assert fit.temperature == pytest.approx(sharpness, rel=0.25)


def test_temperature_keeps_one_when_nothing_can_improve():
    log_probs = torch.log_softmax(torch.zeros(10, 3), dim=1)  # uniform: every T gives log 3
    fit = fit_temperature(log_probs, torch.zeros(10, dtype=torch.long))
    assert fit.nll_after <= fit.nll_before + 1e-12


def test_most_confused_and_highest_order():
    matrix = np.array([[4, 0, 1], [0, 3, 0], [0, 2, 4]])
    pairs = most_confused(matrix, NAMES)
    assert [(p.true, p.predicted, p.count) for p in pairs] == [("red", "green", 2),
                                                                ("blue", "red", 1)]
    assert highest(np.array([0.5, 2.0, 0.5, 3.0]), 3) == [3, 1, 0]
    assert highest(np.array([1.0, 2.0]), 16) == [1, 0]  # fewer than k: all of them


def _band_text_pixels(image: np.ndarray, box: tuple[int, int, int, int]) -> int:
    top, left, bottom, right = box
    band = image[top:bottom, left:right].astype(int)
    return int((np.abs(band - np.array(TEXT)).sum(axis=2) < 60).sum())


def test_panel_grid_draws_its_captions():
    rng = np.random.default_rng(1)
    panels = [rng.integers(0, 255, size=(30, 30, 3), dtype=np.uint8) for _ in range(5)]
    drawn = panel_grid(panels, [["true: a", "pred: b 90%"]] * 5, [False] * 5)
    blank = panel_grid(panels, [["", ""]] * 5, [False] * 5)
    assert drawn.image.shape == blank.image.shape
    assert len(drawn.images) == 5
    for box in drawn.captions:
        assert _band_text_pixels(drawn.image, box) > 30
        assert _band_text_pixels(blank.image, box) == 0
    # Panels hold their own images: no two are alike.
    crops = [drawn.image[t:b, x:r] for t, x, b, r in drawn.images]
    assert all(not np.array_equal(crops[i], crops[j]) for i in range(5) for j in range(i))


def test_evaluate_top_losses_confused_pairs_and_reliability(run, tmp_path):
    data = mixed_folder(tmp_path / "data")
    result = evaluate(run=run, data=data, device="cpu", workers=0, top_losses=4)
    # The three misfiled pictures lose most, highest first.
    assert len(result.top_losses) == 4
    assert [t.rank for t in result.top_losses] == [1, 2, 3, 4]
    losses = [t.loss for t in result.top_losses]
    assert losses == sorted(losses, reverse=True)
    wrong = [t for t in result.top_losses if t.true != t.predicted]
    assert len(wrong) == 3 and result.top_losses[:3] == wrong
    assert {(t.true, t.predicted) for t in wrong} == {("red", "green"), ("blue", "red")}
    for t in result.top_losses:
        assert t.loss == pytest.approx(-np.log(t.true_prob), rel=1e-4)
    assert [(p.true, p.predicted, p.count) for p in result.most_confused] == [
        ("red", "green", 2), ("blue", "red", 1)]

    grid = read_image(result.top_losses_png)
    assert result.top_losses_png == run / "eval" / "top_losses.png"
    assert grid.shape[0] > 2 * 160 and grid.shape[1] > 2 * 160  # 2 x 2 panels
    diagram = read_image(result.reliability_png)
    assert diagram.shape[0] > 300 and diagram.shape[1] > 300
    assert 0.0 <= result.ece <= 1.0

    saved = json.loads(result.metrics_json.read_text())
    assert saved["ece"] == pytest.approx(result.ece)
    assert saved["top_losses_png"].endswith("top_losses.png")
    assert saved["most_confused"][0] == {"true": "red", "predicted": "green", "count": 2}
    assert len(saved["reliability"]) == 15

    events = read_events(run)
    tag = result.tag
    for name in ("confusion_matrix", "top_losses", "reliability"):
        assert f"eval/{tag}/{name}" in events.Tags()["images"]
    picture = events.Images(f"eval/{tag}/top_losses")[-1]
    assert (picture.height, picture.width) == grid.shape[:2]
    assert events.Scalars(f"eval/{tag}/ece")[-1].value == pytest.approx(result.ece, abs=1e-6)


def test_ece_of_evaluate_matches_predicts_probabilities(run, tmp_path):
    data = mixed_folder(tmp_path / "data")
    result = evaluate(run=run, data=data, device="cpu", workers=0)
    files = sorted(data.rglob("*.png"))
    predicted = predict_images(files, run=run, topk=3, device="cpu", workers=0)
    by_file = {Path(p.file).resolve(): p for p in predicted.predictions}
    conf = np.array([by_file[f.resolve()].top[0].prob for f in files])
    correct = np.array([by_file[f.resolve()].top[0].label == f.parent.name for f in files])
    assert result.ece == pytest.approx(_plain_ece(conf, correct), abs=1e-6)


def test_sets_smaller_than_k_show_what_there_is(run, tmp_path):
    data = mixed_folder(tmp_path / "data", {"blue": ["blue"], "red": ["green", "red"]})
    result = evaluate(run=run, data=data, device="cpu", workers=0, top_losses=16,
                      write_tensorboard=False)
    assert len(result.top_losses) == 3
    grid = read_image(result.top_losses_png)
    one = panel_grid([np.zeros((8, 8, 3), np.uint8)] * 3, [["a", "b", "c"]] * 3)
    assert grid.shape == one.image.shape  # three panels, in one row of three
    none = evaluate(run=run, data=data, device="cpu", workers=0, top_losses=0,
                    write_tensorboard=False)
    assert none.top_losses == [] and none.top_losses_png is None


def test_calibrate_then_predict_reports_calibrated_probabilities(run, tmp_path, invoke):
    data = mixed_folder(tmp_path / "data")
    files = sorted(data.rglob("*.png"))
    raw = predict_images(files, run=run, topk=3, device="cpu", workers=0)
    assert not raw.calibrated and raw.temperature is None

    result = invoke("evaluate", "--run", run, "--data", data, "--calibrate", "--json",
                    "--workers", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    stored = json.loads((run / runs.CALIBRATION_FILE).read_text())
    assert out["temperature"] == pytest.approx(stored["temperature"])
    assert out["calibration_file"] == str(run / runs.CALIBRATION_FILE)
    assert stored["nll_after"] <= stored["nll_before"]
    assert stored["model_file"] == runs.MODEL_FILE
    assert out["ece_calibrated"] == pytest.approx(stored["ece_after"])
    temperature = stored["temperature"]
    assert temperature != pytest.approx(1.0)

    shown = invoke("predict", *files, "--run", run, "--topk", "3", "--json")
    assert shown.exit_code == 0, shown.output
    payload = json.loads(shown.stdout)
    assert payload["calibrated"] is True
    assert payload["temperature"] == pytest.approx(temperature)
    # Calibrated = softmax(log(p) / T) of the raw probabilities, image by image.
    for before, after in zip(raw.predictions, payload["predictions"], strict=True):
        p = np.array([g.prob for g in sorted(before.top, key=lambda g: g.index)])
        want = np.exp(np.log(p) / temperature) / np.exp(np.log(p) / temperature).sum()
        got = np.array([g["prob"] for g in sorted(after["top"], key=lambda g: g["index"])])
        assert got == pytest.approx(want, abs=1e-5)
    human = invoke("predict", files[0], "--run", run)
    assert "calibrated prob" in human.stdout and "temperature" in human.stderr
    # A later evaluation measures the stored temperature: here, on the same data, its ECE.
    later = evaluate(run=run, data=data, device="cpu", workers=0, write_tensorboard=False)
    assert later.temperature == pytest.approx(temperature) and not later.calibrated_now
    assert later.ece_calibrated == pytest.approx(stored["ece_after"], abs=1e-6)
    assert later.ece == pytest.approx(stored["ece_before"], abs=1e-6)

    # Other weights under the same name: the stored temperature is not theirs.
    other = create_model("test_convnext3", num_classes=3)
    meta = load_for_inference(run=run, device="cpu").meta
    save_safetensors(other, run / runs.MODEL_FILE, meta)
    again = invoke("predict", files[0], "--run", run, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["calibrated"] is False
    warned = invoke("predict", files[0], "--run", run)
    assert "not calibrated" in warned.stderr and "other weights" in warned.stderr
    stale = evaluate(run=run, data=data, device="cpu", workers=0, write_tensorboard=False)
    assert stale.temperature is None and "other weights" in stale.calibration_note


def test_segmentation_top_losses_show_true_and_predicted_masks(tmp_path, invoke):
    from toolbox.models import create_segmenter
    from toolbox.segment.inference import evaluate_masks
    from toolbox.segment.overlay import write_palette_png

    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    for i in range(5):
        mask = np.zeros((32, 32), np.uint8)
        mask[4 + i:20 + i, 6:22] = 1
        image = rng.integers(0, 80, size=(32, 32, 3)).astype(np.uint8)
        image[mask == 1] = 220
        write_image(tmp_path / "seg" / "val" / "images" / f"{i}.png", image)
        write_palette_png(tmp_path / "seg" / "val" / "masks" / f"{i}.png", mask)
    meta = ModelMeta(model="test_resnet", num_classes=2, class_names=["bg", "fg"],
                     input_size=(3, 32, 32), task="segment", decoder="fpn")
    model_file = tmp_path / "m" / runs.MODEL_FILE
    save_safetensors(create_segmenter("test_resnet", num_classes=2, decoder="fpn"),
                     model_file, meta)
    result = evaluate_masks(data=tmp_path / "seg", split="val", checkpoint=model_file,
                            device="cpu", top_losses=3)
    assert [t.rank for t in result.top_losses] == [1, 2, 3]
    assert [t.loss for t in result.top_losses] == sorted((t.loss for t in result.top_losses),
                                                         reverse=True)
    grid = read_image(result.top_losses_png)
    # Two columns of panels, each the true overlay | 2 px | the predicted overlay, enlarged
    # five times (32 -> 160 pixels high).
    assert grid.shape[1] == 2 * (32 + 2 + 32) * 5 + 3 * 4
    top, left = 4, 4
    half = grid[top:top + 160, left:left + 160].astype(int)
    other = grid[top:top + 160, left + 170:left + 330].astype(int)
    assert np.abs(half - other).mean() > 1  # the untrained model's mask is not the truth
    wide = evaluate_masks(data=tmp_path / "seg", split="val", checkpoint=model_file,
                          device="cpu", top_losses=16, out=tmp_path / "all")
    assert len(wide.top_losses) == 5
    shown = invoke("evaluate", "--checkpoint", model_file, "--data", tmp_path / "seg", "--split",
                   "val", "--top-losses", "2", "--out", tmp_path / "cli", "--json")
    assert shown.exit_code == 0, shown.output
    out = json.loads(shown.stdout)
    assert [t["rank"] for t in out["top_losses"]] == [1, 2]
    assert set(out["top_losses"][0]) == {"rank", "file", "loss", "pixel_acc"}
    assert out["top_losses_png"] == str(tmp_path / "cli" / "top_losses.png")
    human = invoke("evaluate", "--checkpoint", model_file, "--data", tmp_path / "seg",
                   "--split", "val", "--out", tmp_path / "cli")
    assert "Top losses (pixel cross-entropy)" in human.stdout
    for flag in ("--calibrate", "--cam gradcam"):
        refused = invoke("evaluate", "--checkpoint", model_file, "--data", tmp_path / "seg",
                         *flag.split())
        assert refused.exit_code == 2 and flag.split()[0] in refused.stderr


def test_export_says_it_leaves_the_temperature_out(run, tmp_path, invoke):
    data = mixed_folder(tmp_path / "data")
    assert invoke("evaluate", "--run", run, "--data", data, "--calibrate",
                  "--no-tensorboard").exit_code == 0
    temperature = json.loads((run / runs.CALIBRATION_FILE).read_text())["temperature"]
    result = invoke("export", run, "--no-check", "--legacy-exporter", "--out", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert "not calibrated" in result.stderr and f"{temperature:.4f}" in result.stderr
    # And the export's own probabilities are the uncalibrated ones.
    file = sorted(data.rglob("*.png"))[0]
    onnx = predict_images([file], checkpoint=tmp_path / "m.onnx", topk=3, device="cpu")
    torch_raw = predict_images([file], run=run, topk=3, device="cpu")
    assert onnx.calibrated is False and torch_raw.calibrated is True
