"""End-to-end `tb finetune`: accuracy, resume equality, Ctrl-C, DDP and real transfer learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FASHION_MNIST_DIR, TB, ctrl_c_delivered
from finetune_helpers import FASHION_CLASSES, pick, read_events, read_fashion_mnist
from finetune_helpers import write_image_folder as write_folder

from toolbox.models import load_model_file
from toolbox.preprocess import eval_tensor
from toolbox.train import FinetuneConfig, finetune
from toolbox.train import splits as splits_mod

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)  # about 55 s on an idle 2-core VM; a guard against hangs
def test_full_training_on_the_demo_data_reaches_90_percent(tmp_path):
    # Full training from scratch (resnet18 at 32 px): the loop itself learns, no weights needed.
    result = finetune(FinetuneConfig(model="resnet18", img_size=32, pretrained=False, epochs=4,
                                     amp=True, out=str(tmp_path / "run")))
    assert result.best_val_acc1 >= 0.90, [r.val_acc1 for r in result.epochs]


def _resume_config(out: Path) -> FinetuneConfig:
    # onecycle (stepped per batch) with warm-up and augmentation in two workers: everything
    # that could drift between an interrupted and an uninterrupted run.
    return FinetuneConfig(model="test_resnet", img_size=16, pretrained=False, epochs=4,
                          batch_size=128, sched="onecycle", warmup_epochs=1, seed=5,
                          augment="light", workers=2, out=str(out))


def test_stopped_after_epoch_2_and_resumed_equals_uninterrupted(tmp_path):
    straight = finetune(_resume_config(tmp_path / "straight"))

    def stop_after_two(row):
        if row.epoch == 2:
            raise KeyboardInterrupt  # what Ctrl-C does between two epochs

    with pytest.raises(KeyboardInterrupt):
        finetune(_resume_config(tmp_path / "resumed"), on_epoch=stop_after_two)
    saved = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["epoch"] == 2 and saved["interrupted"] is True

    resumed = finetune(FinetuneConfig(), resume=tmp_path / "resumed")
    assert resumed.resumed_from == tmp_path / "resumed" / "checkpoints" / "last.pt"
    assert [r.epoch for r in resumed.epochs] == [1, 2, 3, 4]
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert [r.val_acc1 for r in resumed.epochs] == pytest.approx(
        [r.val_acc1 for r in straight.epochs], abs=1e-9)
    rows = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5  # header + four epochs, none repeated


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"}


def test_ctrl_c_saves_last_checkpoint_and_resume_finishes(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [str(TB), "finetune", "--model", "test_resnet", "--img-size", "16", "--no-pretrained",
         "--epochs", "50", "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        preexec_fn=ctrl_c_delivered)
    try:
        for line in proc.stderr:  # wait for the first finished epoch
            if line.startswith("epoch 1:"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: saved" in err and "Traceback" not in err
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["interrupted"] is True and state["epoch"] >= 1
    done = subprocess.run([str(TB), "finetune", "--resume", str(run),
                           "--epochs", str(state["epoch"] + 1), "--json"],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert [r["epoch"] for r in payload["epochs"]][-1] == state["epoch"] + 1


def test_torchrun_two_processes_on_cpu(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "toolbox", "finetune", "--model", "test_resnet",
           "--img-size", "16", "--no-pretrained", "--epochs", "2", "--out", str(out), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(done.stdout)  # rank 0 alone prints (and writes)
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert [e.step for e in read_events(out).Scalars("acc1/val")] == [1, 2]
    # The validation figures were summed over both ranks: the saved model, fed exactly as
    # `tb evaluate` feeds it, scores the recorded accuracy on the whole validation split.
    model, meta = load_model_file(out / "model.safetensors")
    assert _val_accuracy(model, meta) == pytest.approx(payload["best_val_acc1"], abs=1e-9)
    # Each rank trained on its half of the data: 1438 images / 2 ranks / 64 = 11 steps an epoch.
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {22.0}



def _val_accuracy(model: torch.nn.Module, meta) -> float:
    """`model`'s accuracy on the whole validation split of the built-in data, fed as
    `tb evaluate` feeds it (one process, every image)."""
    splits = splits_mod.load_splits(data=None, dataset=None, root=None, val_split=0.2, seed=0)
    batch = torch.stack([eval_tensor(splits.val.load(i), meta) for i in range(len(splits.val))])
    with torch.no_grad():
        predicted = model.eval()(batch).argmax(1).numpy()
    return float((predicted == splits.val.targets).mean())


def test_torchrun_with_ema_averages_the_same_weights_on_every_rank(tmp_path):
    """Each rank keeps its own average of the weights DDP keeps equal; the EMA accuracy the run
    records (validated on both ranks' shares, summed) is the saved average's on the whole split,
    which holds only when the ranks' averages agree."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29518", "-m", "toolbox", "finetune", "--model", "test_resnet",
           "--img-size", "16", "--no-pretrained", "--epochs", "1", "--ema", "--ema-decay", "0.9",
           "--out", str(out), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(done.stdout)["epochs"][0]
    assert [e.step for e in read_events(out).Scalars("acc1/val_ema")] == [1]
    model, meta = load_model_file(out / "model.safetensors")
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["ema"]["steps"] == 11  # 1438 images / 2 ranks / 64 a batch
    model.load_state_dict(state["ema"]["weights"])
    assert _val_accuracy(model, meta) == pytest.approx(row["ema_val_acc1"], abs=1e-9)

def test_weights_from_an_earlier_run_beat_random_weights_frozen(tmp_path, tb_subprocess):
    """Real transfer: a backbone trained on five Fashion-MNIST classes, frozen, on five others."""
    images, labels = read_fashion_mnist(FASHION_MNIST_DIR)
    names = dict(enumerate(FASHION_CLASSES))
    first = write_folder(tmp_path / "first", *pick(images, labels, [0, 1, 2, 3, 4], 200), names)
    second = write_folder(tmp_path / "second", *pick(images, labels, [5, 6, 7, 8, 9], 60), names)
    done = tb_subprocess("finetune", "--data", first, "--model", "test_resnet", "--img-size",
                         "28", "--no-pretrained", "--epochs", "3", "--lr", "3e-3",
                         "--out", tmp_path / "base")
    assert done.returncode == 0, done.stderr
    weights = tmp_path / "base" / "model.safetensors"

    def frozen_head_accuracy(name: str, weights: str | None) -> float:
        result = finetune(FinetuneConfig(
            data=str(second), model="test_resnet", img_size=28, pretrained=False,
            weights=weights, freeze=True, epochs=4, batch_size=16, lr=1e-2,
            out=str(tmp_path / name)))
        assert result.epochs[0].frozen
        return result.best_val_acc1

    transferred = frozen_head_accuracy("transferred", str(weights))
    scratch = frozen_head_accuracy("scratch", None)
    assert transferred >= scratch + 0.15, (transferred, scratch)


def test_dataset_fetched_by_tb_datasets_with_its_official_split(tmp_path, tb_subprocess):
    root = tmp_path / "data"
    fetched = tb_subprocess("datasets", "fetch", "fashion-mnist", "--root", root,
                            "--from-dir", FASHION_MNIST_DIR)
    assert fetched.returncode == 0, fetched.stderr
    starts = []
    result = finetune(FinetuneConfig(dataset="fashion-mnist", root=str(root),
                                     model="test_resnet", img_size=16, pretrained=False,
                                     freeze=True, epochs=1, batch_size=512,
                                     out=str(tmp_path / "run")), on_start=starts.append)
    assert (starts[0].train_images, starts[0].val_images) == (60_000, 10_000)
    assert "official train/test split" in starts[0].data
    assert result.class_names[:2] == ["T-shirt/top", "Trouser"]
    assert 0.15 < result.best_val_acc1 <= 1.0  # a frozen random backbone, one epoch
