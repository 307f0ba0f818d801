"""`tb finetune --task segment` end to end on real Fashion-MNIST canvases: the export, training
(metrics.csv, TensorBoard, run metadata, resume), `tb predict`, `tb evaluate`, `tb summary`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from finetune_helpers import read_events
from segment_helpers import fashion_segmentation

from toolbox.images import read_image, read_mask
from toolbox.models import read_meta
from toolbox.progress import NullProgress
from toolbox.segment import PreparedPairs, load_segment_splits
from toolbox.train.segment import AugmentedPairs, build_segment_model

TINY = ["--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--batch-size", "16",
        "--workers", "0"]


@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fmnist")


@pytest.fixture(scope="module")
def binary_set(tmp_path_factory, fmnist_root):
    return fashion_segmentation(tmp_path_factory.mktemp("seg") / "binary", root=fmnist_root)


def test_export_is_reproducible_and_holds_real_garments(binary_set, fmnist_root, tmp_path,
                                                        invoke):
    assert (binary_set / "classes.txt").read_text().split("\n")[:2] == ["background",
                                                                      "foreground"]
    assert len(list((binary_set / "train" / "images").glob("*.png"))) == 48
    assert len(list((binary_set / "val" / "masks").glob("*.png"))) == 12
    image = read_image(binary_set / "train" / "images" / "00000.png")
    mask = read_mask(binary_set / "train" / "masks" / "00000.png")
    assert image.shape == (32, 32, 3) and mask.shape == (32, 32)
    assert set(np.unique(mask)) == {0, 1}
    assert np.array_equal(mask == 1, image[:, :, 0] > 0)  # the garment's own pixels
    result = invoke("datasets", "fetch", "fashion-mnist", "--root", fmnist_root,
                    "--export-segmentation", tmp_path / "multi", "--export-max", "48",
                    "--canvas-size", "32")
    assert result.exit_code == 0, result.output
    multi = tmp_path / "multi"
    assert len((multi / "classes.txt").read_text().split()) >= 11
    values = set()
    for path in (multi / "train" / "masks").glob("*.png"):
        values |= set(np.unique(read_mask(path)).tolist())
    assert values <= set(range(11)) and len(values) > 5
    again = fashion_segmentation(tmp_path / "again", root=fmnist_root)
    for name in ("images/00007.png", "masks/00007.png"):
        assert (again / "train" / name).read_bytes() == (binary_set / "train" / name
                                                         ).read_bytes()
    refused = invoke("datasets", "fetch", "fashion-mnist", "--root", fmnist_root,
                     "--export-segmentation", multi)
    assert refused.exit_code == 1 and "already exists" in refused.stderr


def test_augmentation_moves_the_mask_with_the_image(binary_set):
    splits = load_segment_splits(data=binary_set, val_split=0.2, seed=0)
    built = build_segment_model(model="test_resnet", class_names=splits.classes, decoder="fpn",
                                pretrained=False, img_size=32, seed=0)
    pairs = PreparedPairs(splits.train[:4], built.meta, workers=1, progress=NullProgress())
    flipped = AugmentedPairs(pairs, "Fliplr(1.0)", seed=0)
    image, mask, error, index = flipped[(1, 2, 0)]
    assert index == 2
    assert error is None
    assert torch.equal(image, pairs.tensor[2].flip(-1))
    assert torch.equal(mask, pairs.targets[2].flip(-1))


@pytest.mark.slow
def test_finetune_predict_evaluate_summary(binary_set, tmp_path, invoke):
    run = tmp_path / "run"
    result = invoke("finetune", "--task", "segment", "--data", binary_set, *TINY,
                    "--epochs", "2", "--loss", "ce+dice", "--decoder", "unet", "--freeze",
                    "--unfreeze-at", "2", "--lr", "0.01", "--augment", "Fliplr(0.5)",
                    "--out", run, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["class_names"] == ["background", "foreground"]

    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for column in ("val_miou", "val_dice", "val_pixel_acc", "val_iou_background",
                   "val_iou_foreground"):
        assert all(0.0 <= float(r[column]) <= 1.0 for r in rows), column
    best = max(rows, key=lambda r: float(r["val_miou"]))
    assert out["best_val_miou"] == pytest.approx(float(best["val_miou"]), abs=1e-5)
    iou = [float(best["val_iou_background"]), float(best["val_iou_foreground"])]
    assert float(best["val_miou"]) == pytest.approx(sum(iou) / 2, abs=1e-5)

    events = read_events(run)
    scalars = events.Tags()["scalars"]
    for tag in ("miou/val", "dice/val", "pixel_acc/val", "iou_val/foreground"):
        assert tag in scalars
    assert [e.step for e in events.Scalars("miou/val")] == [1, 2]
    assert events.Scalars("miou/val")[-1].value == pytest.approx(float(rows[-1]["val_miou"]),
                                                                 abs=1e-5)
    grids = events.Images("val/image_prediction_mask")
    assert [g.step for g in grids] == [1, 2]
    # Rows of image | prediction | true mask for 8 validation images (32 px, 2 px padding).
    assert (grids[0].width, grids[0].height) == (3 * 32 + 4 * 2, 8 * 32 + 9 * 2)

    meta = read_meta(run / "model.safetensors")
    assert (meta.task, meta.decoder, meta.class_names) == ("segment", "unet",
                                                          ["background", "foreground"])
    assert tuple(meta.input_size) == (3, 32, 32)

    resumed = invoke("finetune", "--resume", run, "--epochs", "3", "--workers", "0")
    assert resumed.exit_code == 0, resumed.output
    with open(run / "metrics.csv", newline="") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2, 3]

    val_images = binary_set / "val" / "images"
    predicted = invoke("predict", val_images, "--run", run, "--out", tmp_path / "masks",
                       "--json")
    assert predicted.exit_code == 0, predicted.output
    preds = json.loads(predicted.stdout)["predictions"]
    assert len(preds) == 12
    mask = read_mask(tmp_path / "masks" / "00000.png")
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1}
    assert read_image(tmp_path / "masks" / "00000.overlay.png").shape == (32, 32, 3)
    no_out = invoke("predict", val_images, "--run", run)
    assert no_out.exit_code == 2 and "--out" in no_out.output

    evaluated = invoke("evaluate", "--run", run, "--data", binary_set, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(evaluated.stdout)
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    best = max(rows, key=lambda r: float(r["val_miou"]))
    # The saved best weights scored on the same val pairs: the run's own figure.
    assert scores["miou"] == pytest.approx(float(best["val_miou"]), abs=1e-4)
    assert len(scores["confusion_matrix"]) == 2
    assert sum(map(sum, scores["confusion_matrix"])) == 12 * 32 * 32
    assert (run / "eval" / "binary-val_confusion.png").is_file()
    assert json.loads((run / "eval" / "binary-val_metrics.json").read_text())["miou"] == \
        pytest.approx(scores["miou"])

    summary = invoke("summary", run / "model.safetensors")
    assert summary.exit_code == 0, summary.output
    assert "decoder" in summary.stdout and "encoder" in summary.stdout


def test_segment_errors_are_one_line(binary_set, tmp_path, invoke):
    cases = [  # usage errors exit 2, data that cannot be used exits 1
        (["finetune", "--task", "segment", *TINY], 2, "--task segment needs --data"),
        (["finetune", "--task", "segment", "--data", binary_set, *TINY, "--loss", "bce"], 2,
         "unknown loss 'bce'"),
        (["finetune", "--task", "segment", "--data", binary_set, *TINY, "--decoder", "fnp"], 2,
         "unknown decoder 'fnp'"),
        (["finetune", "--task", "segmnt", *TINY], 2, "unknown task 'segmnt'"),
        (["finetune", "--task", "segment", "--data", binary_set, "--model", "tv:resnet18",
          "--no-pretrained"], 2, "only timm models"),
        (["finetune", "--task", "segment", "--data", tmp_path, *TINY], 1,
         "no images/ and masks/"),
    ]
    for args, code, message in cases:
        result = invoke(*args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output
