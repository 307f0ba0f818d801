"""`tb finetune --resize crop|squash|letterbox`: the geometry of each mode, and one rule from
training through `tb predict`, `tb evaluate` and `tb export`, read back from the model file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_helpers import flat, pick, write_image_folder

from toolbox import runs
from toolbox.images import read_image
from toolbox.models import ModelMeta, load_model_file
from toolbox.preprocess import eval_tensor, resize_crop_uint8
from toolbox.train import FinetuneConfig, finetune

SIZE = 16


def _wide(image: np.ndarray) -> np.ndarray:
    """A 16x16 digit on the left of a grey 16x40 canvas: the centre crop loses most of it."""
    canvas = np.full((16, 40), 90, dtype=np.uint8)
    canvas[:, :16] = image
    return canvas


@pytest.fixture(scope="module")
def wide_digits(tmp_path_factory) -> Path:
    """An ImageFolder with train/ and val/ of non-square (16x40) real digits, 3 classes."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = np.clip(np.round(raw.images * 255 / 16), 0, 255).astype(np.uint8)
    images = np.stack([_wide(i) for i in images.repeat(2, axis=1).repeat(2, axis=2)])
    root = tmp_path_factory.mktemp("wide") / "d"
    imgs, labels = pick(images, raw.target, [0, 1, 2], 16)
    names = {c: f"digit{c}" for c in range(3)}
    order = np.arange(len(labels))
    write_image_folder(root / "train", imgs[order % 4 != 0], labels[order % 4 != 0], names)
    write_image_folder(root / "val", imgs[order % 4 == 0], labels[order % 4 == 0], names)
    return root


@pytest.fixture(scope="module")
def letterbox_run(wide_digits, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "letterbox"
    finetune(FinetuneConfig(data=str(wide_digits), model="test_resnet", img_size=SIZE,
                            pretrained=False, epochs=2, batch_size=8, workers=0, out=str(run),
                            resize="letterbox", lr=0.01))
    return run


def test_each_mode_gives_its_geometry_on_a_non_square_image():
    image = np.full((20, 40, 3), 200, dtype=np.uint8)
    image[:, :5] = 10  # a dark left edge that the centre crop cuts away
    meta = ModelMeta(model="x", num_classes=2, input_size=(3, 10, 10))
    crop = resize_crop_uint8(image, meta)
    squash = resize_crop_uint8(image, dataclasses.replace(meta, resize="squash"))
    letter = resize_crop_uint8(image, dataclasses.replace(meta, resize="letterbox"))
    assert crop.shape == squash.shape == letter.shape == (3, 10, 10)
    assert crop[:, :, 0].min() == 200  # cropped: the edge is gone, no padding
    assert squash[:, :, 0].max() < 100 and squash[:, 0].min() > 0  # squashed in, no bands
    # Letterbox: 20x40 -> 5x10 in the middle rows, black bands (zero) above and below.
    assert letter[:, :2].max() == 0 and letter[:, -3:].max() == 0
    assert letter[:, 2:7, 0].max() < 100 and letter[:, 2:7, 5].min() == 200
    tall = resize_crop_uint8(image.transpose(1, 0, 2).copy(),
                             dataclasses.replace(meta, resize="letterbox"))
    assert tall[:, :, :2].max() == 0 and tall[:, :, 2:7].min() > 0  # bands left and right
    # An image already at the input size is left alone by every mode.
    same = np.random.default_rng(0).integers(0, 255, (10, 10, 3), dtype=np.uint8)
    for mode in ("crop", "squash", "letterbox"):
        out = resize_crop_uint8(same, dataclasses.replace(meta, resize=mode))
        assert torch.equal(out, torch.from_numpy(same).permute(2, 0, 1))


def test_old_model_files_mean_crop_and_bad_values_are_refused():
    data = ModelMeta(model="x", num_classes=2).to_dict()
    del data["resize"]
    assert ModelMeta.from_dict(data).resize == "crop"
    with pytest.raises(ValueError, match="'resize' must be crop, squash or letterbox"):
        ModelMeta.from_dict({**data, "resize": "pad"})


def test_training_images_get_the_runs_geometry(wide_digits):
    from toolbox.train.data import prepare_run_data
    from toolbox.train.splits import load_splits

    splits = load_splits(data=wide_digits, dataset=None, root=None, val_split=0.2, seed=0)
    meta = ModelMeta(model="x", num_classes=3, input_size=(3, SIZE, SIZE), resize="letterbox")
    # Validation (and the cache the training augmentation starts from): 16x40 -> 6x16 rows
    # in the middle, five black rows above and five below.
    data = prepare_run_data(splits, meta, batch_size=8, seed=0, workers=0, cache=True,
                            augment="CropToFixedSize(width=16, height=8)")
    val = next(iter(data.val_loader))[0]
    assert val.shape[1:] == (3, SIZE, SIZE)
    assert val[:, :, :5].max() == 0 and val[:, :, -5:].max() == 0
    assert (val[:, :, 5:11].float().mean(dim=(1, 2, 3)) > 40).all()
    # An augmentation that changes the size is brought back by the same rule: an 8x16 window
    # is letterboxed into four black rows above and below (crop would scale it up instead).
    batch, _ = next(iter(data.loader.batches(1)))
    assert batch.shape[1:] == (3, SIZE, SIZE)
    assert batch[:, :, :4].max() == 0 and batch[:, :, -4:].max() == 0


@pytest.mark.slow  # trains the module's run (about 10-20 s here)
def test_the_run_records_letterbox_and_predict_uses_it(letterbox_run, wide_digits, invoke):
    from toolbox.inference import predict_images

    model, meta = load_model_file(letterbox_run / runs.MODEL_FILE)
    assert meta.resize == "letterbox"
    args = (letterbox_run / runs.ARGS_FILE).read_text()
    assert "\nresize: letterbox\n" in args and "  resize: letterbox\n" in args  # and resolved
    files = sorted((wide_digits / "val").rglob("*.png"))[:6]
    result = predict_images(files, run=letterbox_run, topk=3, device="cpu", workers=0)
    model.eval()
    with torch.no_grad():
        boxed = torch.stack([eval_tensor(read_image(f), meta) for f in files])
        expected = torch.softmax(model(boxed), dim=1)
        cropped = torch.stack([eval_tensor(read_image(f), dataclasses.replace(meta,
                                                                               resize="crop"))
                               for f in files])
    assert not torch.equal(boxed, cropped)  # the modes do differ on these images
    for row, prediction in enumerate(result.predictions):
        got = {g.index: g.prob for g in prediction.top}
        assert [got[c] for c in range(3)] == pytest.approx(expected[row].tolist(), abs=1e-5)
    cli = invoke("predict", files[0], "--run", letterbox_run, "--json", "--device", "cpu",
                 "--topk", "1")
    assert cli.exit_code == 0, cli.stderr
    top = json.loads(cli.stdout)["predictions"][0]["top"][0]
    assert top["prob"] == pytest.approx(float(expected[0].max()), abs=1e-5)


@pytest.mark.slow  # trains the module's run (about 10-20 s here)
def test_evaluate_uses_letterbox_and_equals_the_runs_validation(letterbox_run, wide_digits,
                                                                tmp_path):
    import csv

    from toolbox.inference import evaluate

    model, meta = load_model_file(letterbox_run / runs.MODEL_FILE)
    classes = sorted(p.name for p in (wide_digits / "val").iterdir())
    files = sorted((wide_digits / "val").rglob("*.png"))
    with torch.no_grad():
        logits = model.eval()(torch.stack([eval_tensor(read_image(f), meta) for f in files]))
    confusion = np.zeros((3, 3), dtype=int)
    for file, guess in zip(files, logits.argmax(dim=1).tolist(), strict=True):
        confusion[classes.index(file.parent.name), guess] += 1
    scores = evaluate(run=letterbox_run, data=wide_digits / "val", device="cpu", workers=0,
                      out=tmp_path / "eval", write_tensorboard=False)
    assert np.asarray(scores.confusion_matrix).tolist() == confusion.tolist()
    best = max(float(r["val_acc1"]) for r in
               csv.DictReader((letterbox_run / runs.METRICS_FILE).open()))
    assert scores.top1 == pytest.approx(best, abs=1e-6)  # metrics.csv keeps six digits


@pytest.mark.slow
def test_export_records_the_rule_and_agrees(letterbox_run, wide_digits, tmp_path):
    import onnx

    from toolbox.export import export_model
    from toolbox.inference import predict_images

    out = tmp_path / "boxed.onnx"
    result = export_model(letterbox_run, out=out, check=12, check_data=wide_digits / "val")
    assert result.parity.passed and result.parity.top1_agreement == 1.0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["resize"]) == {"mode": "letterbox", "interpolation": "bilinear",
                                           "pad": 0}
    files = sorted((wide_digits / "val").rglob("*.png"))
    ours = predict_images(files, checkpoint=out, topk=3, device="cpu", workers=0)
    theirs = predict_images(files, run=letterbox_run, topk=3, device="cpu", workers=0)
    for a, b in zip(ours.predictions, theirs.predictions, strict=True):
        assert [g.prob for g in a.top] == pytest.approx([g.prob for g in b.top], abs=1e-4)


@pytest.mark.slow  # trains the module's run (about 10-20 s here)
def test_resize_cannot_change_on_resume_and_segment_refuses_it(letterbox_run, invoke,
                                                               tmp_path):
    result = invoke("finetune", "--resume", letterbox_run, "--resize", "squash")
    assert result.exit_code == 2
    assert "--resize cannot change on resume (the run has 'letterbox', asked 'squash')" in flat(
        result.stderr)
    result = invoke("finetune", "--task", "segment", "--data", tmp_path, "--resize",
                    "letterbox", "--print-config")
    assert result.exit_code == 2
    assert "--resize letterbox does not apply to --task segment" in flat(result.stderr)
