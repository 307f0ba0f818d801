"""`tb export` of segmentation runs: per-pixel parity on the run's validation images, and the
ONNX file used by `tb predict` and `tb evaluate` like the run itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from segment_helpers import fashion_segmentation

from toolbox import runs
from toolbox.images import read_mask


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(an untrained FPN segmenter's run folder, its image/mask data) on real garments."""
    import torch

    from toolbox.models import ModelMeta, create_segmenter, save_safetensors

    base = tmp_path_factory.mktemp("segment-export")
    data = fashion_segmentation(base / "data", root=base / "root", count=16)
    torch.manual_seed(0)
    meta = ModelMeta(model="test_resnet", num_classes=2, class_names=["background", "garment"],
                     input_size=(3, 32, 32), task="segment", decoder="fpn")
    run = base / "run"
    save_safetensors(create_segmenter(meta.model, num_classes=2, decoder="fpn"),
                     run / runs.MODEL_FILE, meta)
    (run / runs.ARGS_FILE).write_text(f"task: segment\nmodel: test_resnet\ndata: {data}\n")
    return run, data


@pytest.mark.slow
def test_segmentation_run_exports_and_runs_in_predict_and_evaluate(segment_run, tmp_path,
                                                                   invoke):
    run, data = segment_run
    out = tmp_path / "seg.onnx"
    result = invoke("export", run, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "segment" and report["metadata"]["task"] == "segment"
    assert json.loads(report["metadata"]["resize"])["mode"] == "squash"  # images resized whole
    assert report["parity"]["samples"] == 4  # the run's 4 validation canvases
    assert report["parity"]["top1_agreement"] >= 0.99  # of every pixel
    assert "validation images of the run" in report["parity"]["images"]
    summary = json.loads(invoke("summary", out, "--json").stdout)
    assert summary["outputs"][0]["shape"] == ["batch", 2, 32, 32]

    images = data / "val" / "images"
    ours = invoke("predict", images, "--checkpoint", out, "--out", tmp_path / "onnx")
    theirs = invoke("predict", images, "--run", run, "--out", tmp_path / "torch")
    assert ours.exit_code == 0 and theirs.exit_code == 0, ours.stderr + theirs.stderr
    masks = sorted(p.name for p in (tmp_path / "torch").glob("*.png"))
    assert masks and masks == sorted(p.name for p in (tmp_path / "onnx").glob("*.png"))
    same = [(read_mask(tmp_path / "onnx" / m) == read_mask(tmp_path / "torch" / m)).mean()
            for m in masks if "overlay" not in m]
    assert min(same) >= 0.99
    scores = [json.loads(invoke("evaluate", *model, "--data", data, "--json",
                                "--out", tmp_path / name).stdout)
              for name, model in (("e1", ("--checkpoint", out)), ("e2", ("--run", run)))]
    assert scores[0]["miou"] == pytest.approx(scores[1]["miou"], abs=1e-3)
