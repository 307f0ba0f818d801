"""`tb finetune --freeze` feature cache: the frozen backbone runs once per image and data set,
a warm run decodes nothing and runs no backbone forward (counted), the cached path trains to the
uncached path's accuracy, changed and damaged entries are recomputed, and the recipe options
work on it."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch
import yaml
from finetune_helpers import digits_folder

from toolbox.images import write_image
from toolbox.models import load_model_file
from toolbox.preprocess import eval_tensor
from toolbox.train import FinetuneConfig, feature_data, feature_store, finetune
from toolbox.train.feature_data import MappedRows
from toolbox.train.feature_store import DamagedFile, read_shard, write_shard
from toolbox.train.splits import load_splits

LINE = re.compile(r"cached \((\d+) computed in [\d.]+ s, (\d+) reused\)")


@pytest.fixture
def digits(tmp_path):
    return digits_folder(tmp_path / "digits", per_class=12, classes=3)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """Trained-looking weights to start from, as pretrained ones would be: the backbone is the
    same whatever --seed draws for the new head."""
    from toolbox.models import ModelMeta, create_model, save_safetensors

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "backbone.safetensors"
    save_safetensors(create_model("test_resnet", num_classes=3), path,
                     ModelMeta(model="test_resnet", num_classes=3))
    return path


WEIGHTS = []  # the backbone's file, for every run of this module


@pytest.fixture(autouse=True)
def _start_from(backbone):
    WEIGHTS[:] = [backbone]


@pytest.fixture
def counted(monkeypatch):
    """Counts of image decodes and backbone forwards (test_resnet is a timm ResNet)."""
    import timm.models.resnet as resnet

    import toolbox.sources as sources

    calls = {"decode": 0, "forward": 0}
    read, forward = sources.read_image, resnet.ResNet.forward_features

    def counting_read(*args, **kwargs):
        calls["decode"] += 1
        return read(*args, **kwargs)

    def counting_forward(self, x):
        calls["forward"] += 1
        return forward(self, x)

    monkeypatch.setattr(sources, "read_image", counting_read)
    monkeypatch.setattr(resnet.ResNet, "forward_features", counting_forward)
    return calls


def _run(tmp_path, data, name, **kwargs):
    """One in-process frozen run; (result, its start table)."""
    base = {"data": str(data), "model": "test_resnet", "img_size": 16, "pretrained": False,
            "weights": str(WEIGHTS[0]), "freeze": True, "epochs": 2, "batch_size": 8,
            "workers": 0, "val_split": 0.25,
            "out": str(tmp_path / name), "feature_cache_dir": str(tmp_path / "features")}
    starts = []
    result = finetune(FinetuneConfig(**{**base, **kwargs}), on_start=starts.append)
    return result, starts[0]


def _counts(start) -> tuple[int, int]:
    found = LINE.fullmatch(start.features)
    assert found, start.features
    return int(found[1]), int(found[2])


def _shards(tmp_path):
    return sorted((tmp_path / "features").rglob("*.tbf"))


def _accuracy_of_saved_model(run, data, val_split=0.25, seed=0) -> float:
    """What `tb evaluate` measures on the split: eval_tensor + the model file."""
    model, meta = load_model_file(run / "model.safetensors")
    splits = load_splits(data=data, dataset=None, root=None, val_split=val_split, seed=seed)
    batch = torch.stack([eval_tensor(splits.val.load(i), meta) for i in range(len(splits.val))])
    model.eval()
    with torch.no_grad():
        predicted = model(batch).argmax(1).numpy()
    return float((predicted == splits.val.targets).mean())


def test_a_warm_run_with_other_settings_decodes_nothing_and_runs_no_backbone(
        tmp_path, digits, counted):
    _, start = _run(tmp_path, digits, "cold")
    assert _counts(start) == (36, 0)
    assert counted["decode"] == 36 and counted["forward"] >= 1
    assert len(_shards(tmp_path)) == 1
    for n, change in enumerate([{"lr": 0.1}, {"epochs": 3}, {"loss": "focal"},
                                {"label_smoothing": 0.1}, {"class_weights": "auto"},
                                {"sampler": "balanced"}, {"seed": 5}]):
        if n % 2:  # from disk, not from what this process keeps open
            feature_store.forget()
        counted.update(decode=0, forward=0)
        result, start = _run(tmp_path, digits, f"warm{n}", **change)
        assert counted == {"decode": 0, "forward": 0}, change
        assert _counts(start) == (0, 36), change
        assert result.epochs and all(np.isfinite(r.val_loss) for r in result.epochs)


def test_cached_and_uncached_runs_reach_the_same_accuracy_and_the_saved_model_agrees(
        tmp_path, digits):
    cached, start = _run(tmp_path, digits, "cached", epochs=3, lr=0.05)
    assert start.features.startswith("cached (")
    plain, start = _run(tmp_path, digits, "plain", epochs=3, lr=0.05, feature_cache=False,
                        feature_cache_dir=None)
    assert start.features == "computed each epoch (--no-feature-cache)"
    assert abs(cached.best_val_acc1 - plain.best_val_acc1) <= 0.005
    for a, b in zip(cached.epochs, plain.epochs, strict=True):
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-3, abs=1e-4)
    # The saved file is the whole model: evaluated on images, it scores what the run printed.
    assert _accuracy_of_saved_model(cached.run_dir, digits) == pytest.approx(
        cached.best_val_acc1, abs=1e-9)
    saved, _ = load_model_file(cached.run_dir / "model.safetensors")
    assert any(k.startswith("conv1") for k in saved.state_dict())


def test_a_changed_added_or_removed_image_touches_only_its_entry(tmp_path, digits, counted):
    _run(tmp_path, digits, "first")
    files = sorted(digits.rglob("*.png"))
    write_image(files[0], np.full((16, 16), 200, dtype=np.uint8))  # changed content
    write_image(digits / "digit1" / "extra.png", np.zeros((16, 16), dtype=np.uint8))  # added
    files[-1].unlink()  # removed
    feature_store.forget()
    counted.update(decode=0, forward=0)
    _, start = _run(tmp_path, digits, "second")
    assert _counts(start) == (2, 34)
    assert counted["decode"] == 2
    (shard,) = _shards(tmp_path)
    assert len(read_shard(shard).keys) == 36  # the removed and the stale entry dropped


def test_a_damaged_cache_file_is_recomputed_with_one_warning(tmp_path, digits):
    _run(tmp_path, digits, "first")
    (shard,) = _shards(tmp_path)
    raw = bytearray(shard.read_bytes())
    raw[-40] ^= 0xFF  # one feature byte
    shard.write_bytes(bytes(raw))
    feature_store.forget()
    _, start = _run(tmp_path, digits, "second")
    damaged = [w for w in start.warnings if "damaged feature cache file" in w]
    assert len(damaged) == 1 and "checksum mismatch" in damaged[0]
    assert _counts(start) == (36, 0)
    (fresh,) = _shards(tmp_path)
    read_shard(fresh)  # whole again
    fresh.write_bytes(fresh.read_bytes()[:-100])  # truncated
    feature_store.forget()
    _, start = _run(tmp_path, digits, "third")
    assert any("truncated" in w for w in start.warnings) and _counts(start) == (36, 0)


def test_an_unreadable_image_is_skipped_and_reported_as_without_the_cache(tmp_path, digits):
    (digits / "digit2" / "broken.png").write_bytes(b"not a png")
    result, start = _run(tmp_path, digits, "run")
    assert start.skipped == 1 and any("broken.png" in w for w in start.warnings)
    assert start.train_images + start.val_images == 36 and len(result.epochs) == 2


def test_shard_files_round_trip_and_refuse_damage(tmp_path):
    keys = np.arange(3 * 16, dtype=np.uint8).reshape(3, 16)
    rows = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    path = write_shard(tmp_path / "a.tbf", keys, [rows[:2], rows[2:]], 5)
    shard = read_shard(path)
    assert np.array_equal(shard.keys, keys) and np.array_equal(np.asarray(shard.data), rows)
    with pytest.raises(ValueError):
        write_shard(tmp_path / "b.tbf", keys, [rows[:2]], 5)
    assert not (tmp_path / "b.tbf").exists()  # atomic: nothing half-written
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(DamagedFile):
        read_shard(path)


def test_an_unwritable_cache_folder_warns_once_and_trains_in_memory(tmp_path, digits):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result, start = _run(tmp_path, digits, "run", feature_cache_dir=str(blocker / "sub"))
    warned = [w for w in start.warnings if "not writable" in w]
    assert len(warned) == 1 and _counts(start) == (36, 0)
    assert len(result.epochs) == 2


def test_features_over_the_memory_budget_are_read_from_the_mapped_files(
        tmp_path, digits, monkeypatch):
    in_memory, _ = _run(tmp_path, digits, "memory")
    built = []
    real = feature_data.FeatureData._feature_set

    def spy(self, request, targets):
        found = real(self, request, targets)
        built.append(found.tensor)
        return found

    monkeypatch.setattr(feature_data, "FEATURE_BUDGET_BYTES", 0)
    monkeypatch.setattr(feature_data.FeatureData, "_feature_set", spy)
    mapped, _ = _run(tmp_path, digits, "mapped")
    assert built and all(isinstance(t, MappedRows) for t in built)
    assert [r.val_loss for r in mapped.epochs] == pytest.approx(
        [r.val_loss for r in in_memory.epochs], rel=1e-6)


@pytest.mark.parametrize("sched", ["cosine", "step", "multistep", "exponential", "onecycle",
                                   "plateau", "none"])
def test_every_scheduler_trains_on_cached_features(tmp_path, digits, sched):
    result, start = _run(tmp_path, digits, "run", sched=sched, epochs=3)
    assert start.features.startswith("cached (") and len(result.epochs) == 3


def test_ema_patience_class_weights_and_balanced_sampling_on_cached_features(tmp_path, digits):
    result, start = _run(tmp_path, digits, "run", epochs=6, ema=True, ema_decay=0.9,
                         patience=2, min_delta=0.5, class_weights="auto",
                         sampler="balanced", lr=0.05)
    assert start.features.startswith("cached (")
    assert any("class weights" in line for line in start.recipe)
    assert len(result.epochs) == 3 and "early stop" in result.stop_reason  # --patience 2
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    assert all(row["ema_val_acc1"] for row in rows)
    # The EMA or raw weights that were kept score, as a whole model on images, what was printed.
    assert _accuracy_of_saved_model(result.run_dir, digits) == pytest.approx(
        result.best_val_acc1, abs=1e-9)


def test_resume_continues_on_cached_features(tmp_path, digits, counted):
    first, _ = _run(tmp_path, digits, "run", epochs=2)
    counted.update(decode=0, forward=0)
    from toolbox.train import ResumeOverrides

    starts = []
    result = finetune(FinetuneConfig(), resume=first.run_dir,
                      resume_overrides=ResumeOverrides(epochs=4), on_start=starts.append)
    assert counted == {"decode": 0, "forward": 0}
    assert _counts(starts[0]) == (0, 36) and [r.epoch for r in result.epochs] == [1, 2, 3, 4]


@pytest.mark.parametrize(("change", "reason"), [
    ({"augment": "light"}, "--augment changes the images"),
    ({"mixup": 0.2}, "--mixup mixes the images"),
    ({"unfreeze_at": 2}, "--unfreeze-at 2 trains the backbone"),
    ({"freeze": False}, "the backbone trains; --freeze trains the head on cached features"),
])
def test_runs_that_change_the_features_compute_them_each_epoch_and_say_why(
        tmp_path, digits, change, reason):
    result, start = _run(tmp_path, digits, "run", **change)
    assert start.features == f"computed each epoch ({reason})"
    assert not _shards(tmp_path) and len(result.epochs) == 2


def test_a_model_without_a_known_body_head_split_trains_as_before(tmp_path, digits):
    code = tmp_path / "net.py"
    code.write_text("import torch\n"
                    "class Net(torch.nn.Module):\n"
                    "    def __init__(self, num_classes=10):\n"
                    "        super().__init__()\n"
                    "        self.body = torch.nn.Sequential(torch.nn.Flatten(), "
                    "torch.nn.Linear(3 * 16 * 16, 8))\n"
                    "        self.fc = torch.nn.Linear(8, num_classes)\n"
                    "    def forward(self, x):\n"
                    "        return self.fc(self.body(x))\n")
    result, start = _run(tmp_path, digits, "run", model=f"{code}:Net", weights=None)
    assert start.features.startswith("computed each epoch (Net has no timm forward_features")
    assert len(result.epochs) == 2


def test_the_graph_is_logged_when_features_are_computed_each_epoch(tmp_path, digits):
    from finetune_helpers import read_events

    cached, _ = _run(tmp_path, digits, "cached", epochs=1)
    plain, _ = _run(tmp_path, digits, "plain", epochs=1, feature_cache=False,
                    feature_cache_dir=None)
    assert read_events(plain.run_dir).Tags()["graph"] is True
    tags = read_events(cached.run_dir).Tags()
    assert tags["graph"] is False and "train/images" in tags["images"]  # decoded by the pass


def test_cli_flags_reach_the_start_table_and_args_yaml(tmp_path, digits, invoke):
    cache = tmp_path / "mine"
    out = tmp_path / "run"
    done = invoke("finetune", "--data", digits, "--model", "test_resnet", "--img-size", "16",
                  "--no-pretrained", "--freeze", "--epochs", "1", "--workers", "0",
                  "--batch-size", "8", "--feature-cache", cache, "--out", out)
    assert done.exit_code == 0, done.stderr
    assert re.search(r"features\s+│ cached \(36 computed in [\d.]+ s, 0 reused\)", done.stderr)
    args = yaml.safe_load((out / "args.yaml").read_text())
    assert args["feature_cache"] is True and args["feature_cache_dir"] == str(cache.resolve())
    assert args["resolved"]["features"].startswith("cached (36 computed")
    assert list(cache.rglob("*.tbf"))
    done = invoke("finetune", "--data", digits, "--model", "test_resnet", "--freeze",
                  "--feature-cache", cache, "--no-feature-cache", "--out", tmp_path / "x")
    assert done.exit_code == 2 and "contradict" in done.stderr


@pytest.mark.slow
def test_under_torchrun_each_rank_computes_its_share_and_a_later_run_merges_them(tmp_path,
                                                                                 digits):
    import json
    import os
    import subprocess
    import sys

    cache, run = tmp_path / "features", tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "toolbox", "finetune", "--data", str(digits), "--model", "test_resnet",
           "--no-pretrained", "--weights", str(WEIGHTS[0]), "--img-size", "16", "--freeze",
           "--batch-size", "8", "--workers", "0", "--epochs", "2", "--val-split", "0.25",
           "--device", "cpu", "--feature-cache", str(cache), "--out", str(run), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(done.stdout)
    resolved = yaml.safe_load((run / "args.yaml").read_text())["resolved"]
    assert LINE.fullmatch(resolved["features"]).groups() == ("36", "0")  # summed over ranks
    assert resolved["world_size"] == 2
    names = sorted(p.name.split("-")[0] for p in _shards(tmp_path))
    assert names == ["rank0", "rank1"]  # each rank wrote the share it computed
    assert _accuracy_of_saved_model(run, digits) == pytest.approx(payload["best_val_acc1"],
                                                                  abs=1e-9)
    feature_store.forget()
    _, start = _run(tmp_path, digits, "alone")
    assert _counts(start) == (0, 36)
    assert len(_shards(tmp_path)) == 1  # merged into one file by the single-process run
