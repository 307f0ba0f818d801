"""`tb finetune --task segment` under `torchrun` (2 CPU ranks, gloo): validation figures come from
the confusion counts summed over both ranks, and rank 0 alone writes a complete run folder."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import pytest
from finetune_helpers import read_events
from segment_helpers import fashion_segmentation

pytestmark = pytest.mark.slow

COUNT, SIZE = 60, 32  # 60 training and 15 validation canvases: the ranks hold 8 and 7


def test_two_ranks_sum_confusion_counts_and_write_one_run(tmp_path, invoke):
    data = fashion_segmentation(tmp_path / "seg", root=tmp_path / "fmnist", count=COUNT,
                                binary=False, size=SIZE)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "toolbox", "finetune", "--task", "segment", "--data", str(data),
           "--model", "test_resnet", "--no-pretrained", "--img-size", str(SIZE),
           "--batch-size", "8", "--workers", "0", "--epochs", "2", "--lr", "0.01",
           "--loss", "ce+dice", "--device", "cpu", "--out", str(run), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(done.stdout)  # rank 0 alone prints

    # A complete run folder, written once.
    for name in ("args.yaml", "metrics.csv", "model.safetensors", "result.yaml",
                 "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    events = read_events(run)
    assert [e.step for e in events.Scalars("miou/val")] == [1, 2]
    assert [g.step for g in events.Images("val/image_prediction_mask")] == [1, 2]

    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    classes = payload["class_names"]
    assert len(classes) == 11
    for row in rows:
        iou = [float(row[f"val_iou_{name}"]) for name in classes]
        present = [v for v in iou if not math.isnan(v)]
        assert all(0.0 <= v <= 1.0 for v in present) and len(present) >= 2
        assert float(row["val_miou"]) == pytest.approx(sum(present) / len(present), abs=1e-6)
        assert 0.0 < float(row["val_pixel_acc"]) <= 1.0

    # The saved best weights scored by `tb evaluate` on all 15 validation canvases in one
    # process give the run's figure: the ranks' counts were summed, not their scores averaged.
    evaluated = invoke("evaluate", "--run", run, "--data", data, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(evaluated.stdout)
    assert sum(map(sum, scores["confusion_matrix"])) == COUNT // 4 * SIZE * SIZE
    best = max(rows, key=lambda r: float(r["val_miou"]))
    assert scores["miou"] == pytest.approx(float(best["val_miou"]), abs=1e-4)
    assert scores["pixel_acc"] == pytest.approx(float(best["val_pixel_acc"]), abs=1e-4)
    assert payload["best_val_miou"] == pytest.approx(float(best["val_miou"]), abs=1e-6)
