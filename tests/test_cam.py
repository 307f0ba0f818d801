"""Heat maps of where the model looked (grad-cam): the peak lies on the evidence of a
synthetic set, target layers are found in timm and torchvision models, the overlays, JSON and
TensorBoard images of `tb predict --cam` and `tb evaluate --cam`, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_helpers import read_events
from inference_helpers import colour_image, mixed_folder, run_copy, shared_run, write_folder

from toolbox import runs
from toolbox.images import read_image, write_image
from toolbox.inference import load_for_inference
from toolbox.inference.cam import CamMaker, find_target_layer
from toolbox.models import ModelMeta, create_model, save_safetensors


@pytest.fixture
def run(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """TensorBoard events of the test's own (see `run_copy`)."""
    return run_copy(shared_run(tmp_path_factory.mktemp("trained")), tmp_path / "run")


# --- Grad-CAM on a set where a bright square, in a random quadrant, decides the class ------

SQUARE = 64
SQUARE_COLOURS = np.array([[255, 60, 60], [60, 255, 60], [60, 60, 255]])


def _square_images(n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, class = the square's colour, quadrant 0..3 it lies in) on grey noise."""
    images = rng.normal(60, 25, size=(n, SQUARE, SQUARE, 3)).clip(0, 255)
    labels, quads = rng.integers(0, 3, size=n), rng.integers(0, 4, size=n)
    half = SQUARE // 2
    for i, q in enumerate(quads):
        side = int(rng.integers(8, 14))
        r = (q // 2) * half + int(rng.integers(2, half - side - 2))
        c = (q % 2) * half + int(rng.integers(2, half - side - 2))
        images[i, r:r + side, c:c + side] = SQUARE_COLOURS[labels[i]]
    return images.astype(np.uint8), labels, quads


@pytest.fixture(scope="module")
def square_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """timm's test_resnet trained in a few seconds to name the square's colour, saved as tb
    saves a run's model."""
    from toolbox.preprocess import eval_tensor

    torch.manual_seed(0)
    meta = ModelMeta(model="test_resnet", num_classes=3, class_names=["r", "g", "b"],
                     input_size=(3, SQUARE, SQUARE), mean=(0.5,) * 3, std=(0.25,) * 3)
    model = create_model(meta.model, num_classes=3)
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        images, labels, _ = _square_images(32, rng)
        batch = torch.stack([eval_tensor(image, meta) for image in images])
        loss = torch.nn.functional.cross_entropy(model(batch), torch.as_tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("squares") / runs.MODEL_FILE
    save_safetensors(model.eval(), path, meta)
    return path


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_peaks_in_the_quadrant_of_the_square(square_model, method):
    loaded = load_for_inference(checkpoint=square_model, device="cpu")
    images, labels, quads = _square_images(60, np.random.default_rng(1))
    maker = CamMaker(loaded, method)
    try:
        assert maker.layer.name == "layer4"  # found by itself: timm's last feature stage
        overlays, maps = maker.overlays(list(images), labels.tolist())
    finally:
        maker.close()
    assert maps.shape == (60, SQUARE, SQUARE)
    peaks = [np.unravel_index(int(m.argmax()), m.shape) for m in maps]
    found = [(r >= SQUARE // 2) * 2 + (c >= SQUARE // 2) for r, c in peaks]
    assert np.mean(np.array(found) == quads) >= 0.9
    assert overlays[0].shape == (224, 224, 3)  # small inputs are enlarged to be seen


def test_target_layers_of_torchvision_models_and_a_transformer():
    meta = ModelMeta(model="resnet18", num_classes=3, input_size=(3, 64, 64))
    assert find_target_layer(create_model("resnet18", num_classes=3).eval(), meta).name == \
        "layer4"
    vit_meta = ModelMeta(model="test_vit", num_classes=3, input_size=(3, 160, 160))
    from toolbox.errors import ToolboxError

    with pytest.raises(ToolboxError) as caught:
        find_target_layer(create_model("test_vit", num_classes=3).eval(), vit_meta)
    assert "--cam-layer" in caught.value.message and "blocks" in caught.value.message


def test_predict_cam_writes_overlays_json_and_tensorboard(square_model, tmp_path, invoke):
    images, _, _ = _square_images(3, np.random.default_rng(2))
    files = [write_image(tmp_path / "in" / f"sq{i}.png", image) for i, image in
             enumerate(images)]
    result = invoke("predict", tmp_path / "in", "--checkpoint", square_model, "--cam",
                    "gradcam", "--out", tmp_path / "cams", "--tensorboard", tmp_path / "tb",
                    "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["cam_method"], out["cam_layer"]) == ("gradcam", "layer4")
    assert out["calibrated"] is False and out["temperature"] is None
    for pred, file in zip(out["predictions"], files, strict=True):
        assert pred["cam"] == str(tmp_path / "cams" / f"{file.stem}.cam.png")
        assert read_image(pred["cam"]).shape == (224, 224, 3)
    cams = [read_image(p["cam"]) for p in out["predictions"]]
    assert not np.array_equal(cams[0], cams[1])
    assert "predict/cam_gradcam" in read_events(tmp_path / "tb").Tags()["images"]


def test_cam_bad_input_is_one_line(square_model, tmp_path, invoke):
    image = write_image(tmp_path / "x.png", np.zeros((64, 64, 3), np.uint8))
    no_out = invoke("predict", image, "--checkpoint", square_model, "--cam", "gradcam")
    assert no_out.exit_code == 2 and "--out" in no_out.stderr
    unknown = invoke("predict", image, "--checkpoint", square_model, "--cam", "gradcamm",
                     "--out", tmp_path / "o")
    assert unknown.exit_code == 2 and "gradcam" in unknown.stderr
    layer = invoke("predict", image, "--checkpoint", square_model, "--cam", "gradcam",
                   "--cam-layer", "layer9", "--out", tmp_path / "o")
    assert layer.exit_code == 1
    assert "--cam-layer" in layer.stderr and "layer4" in layer.stderr
    assert layer.stderr.count("\n") == 1 and "Traceback" not in layer.output

    vit = tmp_path / "vit.safetensors"
    meta = ModelMeta(model="test_vit", num_classes=2, class_names=["a", "b"],
                     input_size=(3, 160, 160))
    save_safetensors(create_model("test_vit", num_classes=2), vit, meta)
    none = invoke("predict", image, "--checkpoint", vit, "--cam", "gradcam", "--out",
                  tmp_path / "o")
    assert none.exit_code == 1 and none.stderr.count("\n") == 1
    assert "--cam-layer" in none.stderr and "blocks" in none.stderr


def test_cam_on_an_onnx_file_says_it_needs_the_pytorch_model(run, tmp_path, invoke):
    from toolbox.export import export_model

    onnx = export_model(run, out=tmp_path / "m.onnx", check=None,
                        legacy_exporter=True).file
    image = write_image(tmp_path / "x.png", colour_image("red", np.random.default_rng(0)))
    result = invoke("predict", image, "--checkpoint", onnx, "--cam", "gradcam", "--out",
                    tmp_path / "o")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "needs the PyTorch model" in result.stderr
    data = write_folder(tmp_path / "data", 1)
    evaluated = invoke("evaluate", "--checkpoint", onnx, "--data", data, "--cam", "gradcam")
    assert evaluated.exit_code == 1 and "needs the PyTorch model" in evaluated.stderr


def test_evaluate_cam_for_the_top_losses(run, tmp_path, invoke):
    data = mixed_folder(tmp_path / "data")
    result = invoke("evaluate", "--run", run, "--data", data, "--top-losses", "3", "--cam",
                    "gradcam++", "--json", "--workers", "0")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["cam_method"] == "gradcam++" and out["cam_layer"]
    cams = [Path(t["cam"]) for t in out["top_losses"]]
    assert len(cams) == 3 and all(p.parent == run / "eval" / "cam" for p in cams)
    assert all(read_image(p).shape == (224, 224, 3) for p in cams)
    tags = read_events(run).Tags()["images"]
    assert f"eval/{out['tag']}/top_losses_cam" in tags
    for key in ("ece", "reliability_png", "top_losses_png", "most_confused", "temperature"):
        assert key in out
    for bad, flag in ((["--cam", "gradcam", "--top-losses", "0"], "--cam"),
                      (["--cam-layer", "stages.2"], "--cam-layer")):
        refused = invoke("evaluate", "--run", run, "--data", data, *bad)
        assert refused.exit_code == 2 and flag in refused.stderr
    human = invoke("evaluate", "--run", run, "--data", data, "--top-losses", "2",
                   "--no-tensorboard")
    assert human.exit_code == 0, human.output
    for text in ("Top losses (2 of 14)", "Most confused", "ECE (15 bins)", "reliability.png"):
        assert text in human.stdout


def test_the_help_names_every_cam_method():
    """`--cam`'s help lists the methods by hand (the registry's module is too heavy for
    `tb --help`): this keeps the two the same."""
    from typing import get_args

    from toolbox.cli.options import CamOpt
    from toolbox.inference.cam import CAM_METHODS

    text = get_args(CamOpt)[1].help
    listed = text.split(": ", 1)[1].rstrip(".").replace(" or ", ", ").split(", ")
    assert listed == list(CAM_METHODS)
