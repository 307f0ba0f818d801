"""The examples run: `examples/walkthrough.sh` end to end on real Fashion-MNIST (each step's
output checked on disk), the custom model under `tb summary`, and the Python API demo."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FASHION_MNIST_DIR, REPO, TB

from toolbox import runs
from toolbox.images import collect_images, read_image

PER_SPLIT = 200
EPOCHS = 3
MODEL = "resnet10t"
SEG_COUNT, SEG_SIZE = 64, 32  # 64 training and 16 validation canvases of one garment each


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "HF_HUB_OFFLINE": "1",
            "TB_CACHE_DIR": str(tmp_path / "cache"), **extra}


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, subprocess.CompletedProcess]:
    """Run the script once, as a user would, in a fresh folder (smaller sizes and a smaller
    ResNet than its defaults, so CI takes about a minute)."""
    tmp = tmp_path_factory.mktemp("walkthrough")
    env = _env(tmp, TB=str(TB), FMNIST_DIR=str(FASHION_MNIST_DIR), PER_SPLIT=str(PER_SPLIT),
               EPOCHS=str(EPOCHS), MODEL=MODEL, SEG_COUNT=str(SEG_COUNT),
               SEG_SIZE=str(SEG_SIZE))
    proc = subprocess.run(["bash", str(REPO / "examples" / "walkthrough.sh"), "work"],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    return tmp / "work", proc


def _events(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_walkthrough_runs_every_step(walkthrough):
    _, proc = walkthrough
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    for n in range(1, 9):
        assert f"==> {n}. " in proc.stderr


@pytest.mark.slow
def test_step1_fetch_and_export(walkthrough):
    from toolbox.datasets import open_dataset

    work, proc = walkthrough
    assert proc.returncode == 0
    assert len(open_dataset("fashion-mnist", work / "data", "test")) == 10_000
    for split in ("train", "test"):
        folder = work / "fmnist" / split
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        assert len(classes) == 10 and "Sneaker" in classes
        files = collect_images(folder)
        assert len(files) == PER_SPLIT
        assert read_image(files[0].path).shape == (28, 28, 3)


@pytest.mark.slow
def test_step2_augment(walkthrough):
    work, proc = walkthrough
    assert proc.returncode == 0
    train = work / "dataset" / "train"
    names = {f.relative.as_posix() for f in collect_images(train)}
    originals = {f.relative.as_posix() for f in collect_images(work / "fmnist" / "train")}
    assert originals <= names  # --include-original
    augmented = {n for n in names if "_aug0." in n}
    assert len(augmented) == PER_SPLIT and len(names) == 2 * PER_SPLIT
    assert (train / "pipeline.yaml").is_file()
    preview = read_image(work / "augment-preview.png")
    assert preview.shape[0] > 28 and preview.shape[1] > 28
    assert len(collect_images(work / "dataset" / "val")) == PER_SPLIT


@pytest.mark.slow
def test_step3_finetune_run_folder(walkthrough):
    from toolbox.models import read_meta

    work, proc = walkthrough
    assert proc.returncode == 0
    run = work / "run"
    meta = read_meta(run / runs.MODEL_FILE)
    classes = sorted(p.name for p in (work / "fmnist" / "train").iterdir())
    assert meta.class_names == classes and meta.input_size == (3, 32, 32)
    rows = list(csv.DictReader((run / runs.METRICS_FILE).open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert runs.checkpoint_path(run, runs.LAST_CHECKPOINT).is_file()
    assert (run / runs.ARGS_FILE).is_file()


@pytest.mark.slow
def test_step4_summary(walkthrough):
    from toolbox.models import load_model_file

    work, proc = walkthrough
    assert proc.returncode == 0
    model, _ = load_model_file(work / "run" / runs.MODEL_FILE)
    total = sum(p.numel() for p in model.parameters())
    text = (work / "summary.txt").read_text()
    line = next(line for line in text.splitlines() if "Total params" in line)
    assert f"{total:,}" in line


@pytest.mark.slow
def test_step5_and_6_tensorboard_and_evaluation(walkthrough):
    work, proc = walkthrough
    assert proc.returncode == 0
    acc = _events(work / "run")
    images = acc.Tags()["images"]
    assert "val-images" in images  # tb log-images
    assert "eval/dataset-val/confusion_matrix" in images  # tb evaluate
    report = json.loads((work / "eval" / "dataset-val_metrics.json").read_text())
    assert report["samples"] == PER_SPLIT
    assert read_image(work / "eval" / "dataset-val_confusion.png").shape[0] > 300
    # The best weights score on DIR/val exactly what finetune recorded for its best epoch.
    rows = list(csv.DictReader((work / "run" / runs.METRICS_FILE).open()))
    best = max(float(r["val_acc1"]) for r in rows)
    assert round(report["top1"] * PER_SPLIT) == round(best * PER_SPLIT)
    assert acc.Scalars("eval/dataset-val/top1")[0].value == pytest.approx(report["top1"])
    assert report["top1"] > 0.25  # 10 classes: it learnt something in three short epochs
    assert np.array(report["confusion_matrix"]).sum() == PER_SPLIT


@pytest.mark.slow
def test_step7_predictions(walkthrough):
    work, proc = walkthrough
    assert proc.returncode == 0
    expected = sorted(str(p) for p in (work / "fmnist" / "test").glob("*/0000*.png"))
    rows = list(csv.DictReader((work / "predictions.csv").open()))
    assert sorted(str(work.parent / r["file"]) for r in rows) == expected
    classes = {p.name for p in (work / "fmnist" / "test").iterdir()}
    for row in rows:
        assert not row["error"] and row["label_1"] in classes
        assert 1.0 >= float(row["prob_1"]) >= float(row["prob_2"]) >= float(row["prob_3"])
    assert "Predictions" in proc.stdout


@pytest.mark.slow
def test_step8_segmentation(walkthrough):
    from toolbox.images import read_mask
    from toolbox.models import read_meta

    work, proc = walkthrough
    assert proc.returncode == 0
    meta = read_meta(work / "seg-run" / runs.MODEL_FILE)
    assert (meta.task, meta.class_names) == ("segment", ["background", "foreground"])
    rows = list(csv.DictReader((work / "seg-run" / runs.METRICS_FILE).open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    inputs = sorted((work / "seg" / "val" / "images").glob("0000*.png"))
    assert len(inputs) == 10
    for image in inputs:
        mask = read_mask(work / "seg-masks" / image.name)
        assert mask.shape == (SEG_SIZE, SEG_SIZE) and set(np.unique(mask)) <= {0, 1}
        assert (work / "seg-masks" / f"{image.stem}.overlay.png").is_file()
    report = json.loads((work / "seg-eval" / "seg-val_metrics.json").read_text())
    assert report["images"] == SEG_COUNT // 4
    best = max(float(r["val_miou"]) for r in rows)
    assert report["miou"] == pytest.approx(best, abs=1e-4)  # the run's own figure


def test_custom_model_in_tb_summary(tb_subprocess):
    import torch

    spec = f"{REPO / 'examples' / 'custom_model.py'}:TinyNet"
    proc = tb_subprocess("summary", spec, "--num-classes", "3", "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from custom_model import TinyNet
    finally:
        sys.path.remove(str(REPO / "examples"))
    net = TinyNet(num_classes=3)
    assert out["total_params"] == sum(p.numel() for p in net.parameters())
    assert out["input_size"] == [1, 3, 32, 32]
    assert torch.Size([2, 3]) == net(torch.zeros(2, 3, 32, 32)).shape


@pytest.mark.slow
def test_api_demo_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "api_demo.py"), "demo"],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "only these layers changed: fc" in proc.stdout
    out = tmp_path / "demo" / "augmented"
    assert len(collect_images(out)) == 12  # 6 images x 2 copies
    assert (out / "pipeline.yaml").is_file()
