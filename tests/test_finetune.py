"""`tb finetune` and `toolbox.train`: run folder, TensorBoard, freezing, weights, bad input."""

from __future__ import annotations

import csv
import math
import time

import numpy as np
import pytest
import torch
import yaml
from finetune_helpers import digits_folder, read_events
from typer.testing import CliRunner

from toolbox.cli.app import app
from toolbox.devices import cpu_has_bf16
from toolbox.errors import ToolboxError
from toolbox.models import ModelMeta, create_model, load_model_file, save_safetensors
from toolbox.preprocess import eval_tensor
from toolbox.progress import NullProgress
from toolbox.sources import SubsetSource
from toolbox.train import DEFAULT_LR, FinetuneConfig, finetune, sampling
from toolbox.train import data as data_mod
from toolbox.train import splits as splits_mod
from toolbox.train.engine import amp_setup
from toolbox.train.modeling import build_model
from toolbox.train.optim import SCHEDULERS, LrSchedule

TINY = ["--model", "test_resnet", "--img-size", "16"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One real CLI run on the built-in digits: frozen, bfloat16 autocast, two epochs, its
    features computed (a feature cache of its own: no other test's run warmed it)."""
    out = tmp_path_factory.mktemp("demo") / "run"
    features = out.parent / "features"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("NO_COLOR", "1")
        mp.setenv("COLUMNS", "200")
        result = CliRunner().invoke(app, ["finetune", "--freeze", "--amp", *TINY,
                                          "--epochs", "2", "--out", str(out),
                                          "--feature-cache", str(features)])
    return out, result


def test_demo_run_reports_and_writes_the_run_folder(demo_run):
    out, result = demo_run
    assert result.exit_code == 0, result.stderr
    assert "built-in demo data: scikit-learn digits" in result.stderr
    assert ("bfloat16" if cpu_has_bf16() else "no bfloat16 instructions") in result.stderr
    # The new head only: test_resnet's classifier, fc, is 96 x 10 + 10 parameters.
    assert "970 trainable" in result.stderr
    warning = "pretrained weights for test_resnet are not available"
    assert result.stderr.count(warning) == 1  # warned once
    # ... as a frozen random backbone: what to expect and the two ways out
    for part in ("--freeze with a random backbone", "expect far lower accuracy",
                 "--weights FILE", "train without --freeze"):
        assert part in " ".join(result.stderr.split()), part
    assert "val accuracy" in result.stdout and f"tensorboard --logdir {out}" in result.stdout

    args = yaml.safe_load((out / "args.yaml").read_text())
    assert args["freeze"] is True and args["amp"] is True and args["model"] == "test_resnet"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["val_loss"])) for r in rows)
    for name in ("last.pt", "best.pt"):
        state = torch.load(out / "checkpoints" / name, weights_only=True)
        assert state["class_names"] == [str(d) for d in range(10)]
        assert {"model", "optimizer", "scheduler", "scaler", "epoch", "args"} <= set(state)

    _, meta = load_model_file(out / "model.safetensors")
    assert meta.model == "test_resnet" and meta.num_classes == 10
    assert tuple(meta.input_size) == (3, 16, 16)


def test_model_file_loads_with_timm_pretrained_cfg_overlay(demo_run):
    import timm
    from safetensors.torch import load_file

    out, _ = demo_run
    path = out / "model.safetensors"
    model = timm.create_model("test_resnet", pretrained=True, num_classes=10,
                              pretrained_cfg_overlay={"file": str(path), "num_classes": 10})
    saved = load_file(str(path))
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_recorded_val_accuracy_equals_eval_tensor_on_the_saved_model(demo_run):
    """What `tb evaluate` does (eval_tensor + load_model_file) gives the recorded accuracy."""
    out, result = demo_run
    assert result.exit_code == 0, result.stderr
    model, meta = load_model_file(out / "model.safetensors")
    splits = splits_mod.load_splits(data=None, dataset=None, root=None, val_split=0.2, seed=0)
    batch = torch.stack([eval_tensor(splits.val.load(i), meta) for i in range(len(splits.val))])
    model.eval()
    with torch.no_grad():
        predicted = model(batch).argmax(1).numpy()
    accuracy = float((predicted == splits.val.targets).mean())
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert accuracy == pytest.approx(best["best_acc1"], abs=1e-9)


def test_event_file_holds_scalars_graph_images_and_hparams(demo_run):
    out, _ = demo_run
    events = read_events(out)
    tags = events.Tags()
    for tag in ("loss/train", "loss/val", "acc1/train", "acc1/val", "acc5/val", "lr/head",
                "throughput/images_per_s"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    recorded = [float(r["val_acc1"]) for r in csv.DictReader((out / "metrics.csv").open())]
    assert [e.value for e in events.Scalars("acc1/val")] == pytest.approx(recorded, rel=1e-5)
    # Trained on cached features: no graph (tracing would run the backbone), and the image
    # grid shows images the feature pass decoded (test_feature_cache checks the graph of an
    # uncached run).
    assert tags["graph"] is False
    image = events.Images("train/images")[0]
    assert image.width > 16 and image.height > 16  # a grid of training images
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams and b"freeze" in hparams["_hparams_/experiment"]
    assert events.Scalars("hparam/best_val_acc1")[0].value == pytest.approx(max(recorded))


def _tiny_weights(path, num_classes, model="test_resnet"):
    torch.manual_seed(1)
    net = create_model(model, num_classes=num_classes)
    save_safetensors(net, path, ModelMeta(model=model, num_classes=num_classes))
    return {k: v.clone() for k, v in net.state_dict().items()}


def _config(tmp_path, **kwargs) -> FinetuneConfig:
    base = {"data": str(digits_folder(tmp_path / "digits")), "model": "test_resnet",
            "img_size": 16, "pretrained": False, "epochs": 2, "batch_size": 8,
            "out": str(tmp_path / "run"), "val_split": 0.25}
    return FinetuneConfig(**{**base, **kwargs})


def test_freeze_keeps_backbone_and_batchnorm_statistics(tmp_path):
    start = _tiny_weights(tmp_path / "start.safetensors", 5)
    progress = NullProgress()
    finetune(_config(tmp_path, weights=str(tmp_path / "start.safetensors"), freeze=True,
                     lr=0.05), progress=progress)
    assert any("dropped the 5-class head" in n for n in progress.notes)
    final = load_model_file(tmp_path / "run" / "model.safetensors")[0].state_dict()
    backbone = [k for k in final if not k.startswith("fc.")]
    assert any("running_mean" in k for k in backbone)
    for key in backbone:
        assert torch.equal(final[key], start[key]), key
    assert final["fc.weight"].shape == (3, 96)


def test_unfreeze_at_trains_the_backbone_with_a_lower_lr(tmp_path):
    start = _tiny_weights(tmp_path / "start.safetensors", 3)
    result = finetune(_config(tmp_path, weights=str(tmp_path / "start.safetensors"),
                              freeze=True, unfreeze_at=2, backbone_lr_scale=0.1, sched="none",
                              channels_last=True, grad_accum=2, clip_grad=1.0))
    assert [r.frozen for r in result.epochs] == [True, False]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    lrs = {g["name"]: g["lr"] for g in state["optimizer"]["param_groups"]}
    head_lr = DEFAULT_LR["partly frozen"]  # no --lr: chosen by the mode
    assert lrs["head"] == pytest.approx(head_lr) and lrs["backbone"] == pytest.approx(head_lr / 10)
    assert result.lr == pytest.approx(head_lr)
    assert yaml.safe_load((tmp_path / "run" / "args.yaml").read_text())["lr"] == head_lr
    assert not torch.equal(state["model"]["conv1.0.weight"], start["conv1.0.weight"])
    saved, _ = load_model_file(tmp_path / "run" / "model.safetensors")  # written contiguous
    assert saved.state_dict()["conv1.0.weight"].is_contiguous()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import toolbox.train.trainer as run_mod

    real = run_mod.build_loss

    class GoesNaN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.calls = real("ce"), 0

        def forward(self, logits, targets):
            self.calls += 1
            loss = self.inner(logits, targets)
            return loss * float("nan") if self.calls > 4 else loss  # epoch 1 has 3 batches

    monkeypatch.setattr(run_mod, "build_loss", lambda *a, **k: GoesNaN())
    with pytest.raises(ToolboxError, match="loss became nan at epoch 2") as err:
        finetune(_config(tmp_path, epochs=3))
    assert "last good checkpoint" in err.value.message and "(epoch 1)" in err.value.message
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_offline_pretrained_falls_back_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def build(name: str, pretrained: bool):
        start = time.perf_counter()
        built = build_model(model=name, class_names=["a", "b"], pretrained=pretrained,
                            weights=None, img_size=None, seed=0)
        return built, time.perf_counter() - start

    for name in ("test_resnet", "tv:resnet18"):
        build(name, False)  # warm imports and caches
        _, plain = build(name, False)
        built, offline = build(name, True)
        assert built.weights_source == "random"
        assert len(built.warnings) == 1 and "not cached, and HF_HUB_OFFLINE" in built.warnings[0]
        # The failed hub lookup costs well under a second on top of building the model.
        assert offline - plain < 1.0, f"{name}: {offline:.2f}s vs {plain:.2f}s"


def test_image_folder_with_train_and_val_and_odd_images(tmp_path):
    from toolbox.images import write_image

    root = tmp_path / "data"
    for split, n in (("train", 6), ("val", 2)):
        digits_folder(root / split, per_class=n, classes=2)
    rgba = np.zeros((20, 12, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    write_image(root / "train" / "digit0" / "rgba.png", rgba)
    write_image(root / "train" / "digit1" / "gray16.png",
                np.full((9, 9), 40000, dtype=np.uint16))
    (root / "train" / "digit1" / "broken.png").write_bytes(b"not a png")
    progress = NullProgress()
    result = finetune(_config(tmp_path, data=str(root), epochs=1), progress=progress)
    assert result.class_names == ["digit0", "digit1"]
    assert any("skipped 1 unreadable image(s), e.g." in n and "broken.png" in n
               for n in progress.notes)
    row = result.epochs[0]
    assert 0.0 <= row.val_acc1 <= 1.0 and math.isfinite(row.train_loss)
    splits = splits_mod.load_splits(data=root, dataset=None, root=None, val_split=0.2, seed=0)
    assert (len(splits.train), len(splits.val)) == (15, 4)  # broken.png is found, then skipped


def test_image_folder_with_train_and_test_trains_on_train_and_validates_on_test(tmp_path):
    root = tmp_path / "export"  # what `tb datasets fetch --export-folder` writes
    digits_folder(root / "train", per_class=6, classes=2)
    digits_folder(root / "test", per_class=3, classes=2)
    splits = splits_mod.load_splits(data=root, dataset=None, root=None, val_split=0.2, seed=0)
    assert splits.classes == ["digit0", "digit1"]
    assert (len(splits.train), len(splits.val)) == (12, 6)
    assert all(p.parent.parent == root / "test" for p in splits.val.paths)
    result = finetune(_config(tmp_path, data=str(root), epochs=1))
    assert result.class_names == ["digit0", "digit1"]


def test_streaming_without_cache_skips_an_unreadable_image(invoke, tmp_path):
    root = digits_folder(tmp_path / "digits", per_class=6, classes=2)
    (root / "digit1" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    result = invoke("finetune", "--data", root, *TINY, "--no-pretrained", "--no-cache",
                    "--workers", "2", "--epochs", "2", "--batch-size", "4", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 unreadable image(s)" in result.stderr and "broken.png" in result.stderr
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_dataset_option_uses_the_official_splits(tmp_path, monkeypatch):
    import toolbox.datasets as datasets_mod

    rng = np.random.default_rng(0)

    class Fake:
        def __init__(self, split):
            self.classes = ["a", "b"]
            self.targets = np.array([0, 1] * (8 if split == "train" else 3))

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, i):
            return rng.integers(0, 255, (10, 10, 3), dtype=np.uint8), int(self.targets[i])

    calls = []
    monkeypatch.setattr(datasets_mod, "open_dataset",
                        lambda name, root, split: calls.append((name, split)) or Fake(split))
    result = finetune(_config(tmp_path, data=None, dataset="fake", root=str(tmp_path),
                              epochs=1))
    assert calls == [("fake", "train"), ("fake", "test")]
    assert result.class_names == ["a", "b"]


def test_missing_dataset_names_the_fetch_command(invoke, tmp_path):
    result = invoke("finetune", "--dataset", "fashion-mnist", "--root", tmp_path, *TINY)
    assert result.exit_code == 1
    assert "tb datasets fetch fashion-mnist" in result.stderr
    assert "Traceback" not in result.stderr


def _bad_inputs(tmp_path):
    one = digits_folder(tmp_path / "one", per_class=4, classes=1)
    empty = digits_folder(tmp_path / "empty", per_class=4, classes=2)
    (empty / "digit2").mkdir()
    two = digits_folder(tmp_path / "two", per_class=4, classes=2)
    _tiny_weights(tmp_path / "convnext.safetensors", 2, model="test_convnext")
    (tmp_path / "norun").mkdir()
    return {
        "missing data": (["--data", tmp_path / "nope"], "no such data folder"),
        "one class": (["--data", one], "needs at least two"),
        "empty class": (["--data", empty], "holds no images"),
        "unknown model": (["--data", two, "--model", "resnet_18"], "unknown model 'resnet_18'", 2),
        "other model's weights": (["--data", two, "--weights", tmp_path / "convnext.safetensors"],
                                  "it holds test_convnext weights"),
        "resume without a run": (["--resume", tmp_path / "norun"], "holds no run to resume"),
        "resume missing path": (["--resume", tmp_path / "gone"], "no such run folder"),
    }


def test_bad_inputs_fail_with_one_line(invoke, tmp_path):
    for case, (args, message, *code) in _bad_inputs(tmp_path).items():
        extra = [] if "--model" in args or "--resume" in args else TINY
        result = invoke("finetune", *args, *extra, "--no-pretrained", "--epochs", "1",
                        "--out", tmp_path / "out")
        usage = code == [2]  # a bad option value: Typer's usage error, exit 2
        assert result.exit_code == (2 if usage else 1), (case, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines()
                 if line.startswith("Invalid value" if usage else "error:")]
        assert message in result.stderr and (usage or len(lines) == 1), (case, result.stderr)
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "out" / "model.safetensors").exists()


def test_unknown_model_suggests_close_names(invoke):
    result = invoke("finetune", "--model", "resnet_18", "--epochs", "1")
    assert result.exit_code == 2 and "resnet18" in result.stderr


def test_out_folder_with_a_run_is_not_overwritten(invoke, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    result = invoke("finetune", "--out", run, *TINY, "--no-pretrained")
    assert result.exit_code == 1 and "--resume" in result.stderr
    assert (run / "checkpoints" / "last.pt").read_bytes() == b"x"


def test_stratified_split_is_seeded_and_keeps_every_class():
    targets = np.array([0] * 10 + [1] * 5 + [2] * 2)
    train, val = splits_mod.stratified_split(targets, 0.2, seed=3)
    again = splits_mod.stratified_split(targets, 0.2, seed=3)
    assert np.array_equal(val, again[1]) and np.array_equal(train, again[0])
    assert sorted(np.concatenate([train, val])) == list(range(17))
    assert [int((targets[val] == c).sum()) for c in range(3)] == [2, 1, 1]


def test_epoch_order_is_seeded_and_splits_across_ranks():
    first = sampling.epoch_indices(10, epoch=1, seed=0, shuffle=True)
    assert first == sampling.epoch_indices(10, epoch=1, seed=0, shuffle=True)
    assert first != sampling.epoch_indices(10, epoch=2, seed=0, shuffle=True)
    # Two ranks: each shuffles its own share (5 and 4 of 9 samples), padded to 5 steps.
    split = SubsetSource(splits_mod.digits_source(), np.arange(9))
    shares = [sampling.rank_share(split, r, 2) for r in (0, 1)]
    orders = [sampling.epoch_indices(len(s), epoch=1, seed=0, shuffle=True, rank=r, length=5)
              for r, s in enumerate(shares)]
    assert len(orders[0]) == len(orders[1]) == 5
    seen = {int(shares[r].indices[i]) for r in (0, 1) for i in orders[r]}
    assert seen == set(range(9))
    assert sorted(orders[0]) == list(range(5)) and set(orders[1]) == set(range(4))


def test_augmentation_seeds_per_sample_and_epoch(tmp_path):
    source = splits_mod.digits_source()
    meta = ModelMeta(model="test_resnet", num_classes=10, input_size=(3, 16, 16))
    images = data_mod.PreparedImages(SubsetSource(source, np.arange(20)), meta,
                                     cache=True, workers=1)
    one = data_mod.AugmentedDataset(images, "Affine(rotate=(-40, 40))", seed=7)
    other = data_mod.AugmentedDataset(images, "Affine(rotate=(-40, 40))", seed=7)
    a = one[(1, 3, 0)][0]  # (epoch, sample, earlier draws of it in the epoch)
    assert torch.equal(a, other[(1, 3, 0)][0])  # another worker, the same sample: same result
    assert torch.equal(a, one[(1, 3, 0)][0])
    assert not torch.equal(a, one[(2, 3, 0)][0])  # next epoch: new augmentation
    assert not torch.equal(a, one[(1, 3, 1)][0])  # drawn again (--sampler balanced): new too
    assert a.shape == (3, 16, 16) and a.dtype == torch.uint8


def test_every_scheduler_steps_and_survives_a_weights_only_checkpoint(tmp_path):
    for name in SCHEDULERS:
        model = torch.nn.Linear(2, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        cfg = FinetuneConfig(sched=name, epochs=6, warmup_epochs=1 if name != "none" else 0)
        schedule = LrSchedule(opt, cfg, steps_per_epoch=3)
        lrs = [opt.param_groups[0]["lr"]]
        for epoch in range(1, 7):
            for _ in range(3):
                opt.step()
                schedule.step_batch()
            schedule.step_epoch(epoch, val_loss=1.0)
            lrs.append(opt.param_groups[0]["lr"])
        torch.save(schedule.state_dict(), tmp_path / f"{name}.pt")
        fresh = LrSchedule(torch.optim.SGD(model.parameters(), lr=0.1), cfg, 3)
        fresh.load_state_dict(torch.load(tmp_path / f"{name}.pt", weights_only=True))
        assert fresh.state_dict()["main"]["last_epoch"] == schedule.state_dict()["main"][
            "last_epoch"], name
        if name in ("cosine", "step", "multistep", "exponential"):
            assert lrs[0] == pytest.approx(0.001) and lrs[1] == pytest.approx(0.1), name
            assert lrs[-1] < 0.1, name
        if name == "onecycle":
            assert max(lrs) <= 0.1 + 1e-9 and lrs[-1] < 0.01
        if name == "none":
            assert lrs == pytest.approx([0.1] * 7)


def test_amp_picks_float16_with_a_scaler_on_cuda_and_bfloat16_elsewhere(monkeypatch):
    import toolbox.devices as devices

    cpu = amp_setup(torch.device("cpu"), True, "bf16")
    assert cpu.dtype == torch.bfloat16 and cpu.scaler is None
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert amp_setup(torch.device("cpu"), True).dtype == torch.bfloat16
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)  # AVX2 only: emulated, slow
    emulated = amp_setup(torch.device("cpu"), True)
    assert not emulated.enabled and "no bfloat16 instructions" in emulated.label
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler warns when no GPU is present
        cuda = amp_setup(torch.device("cuda"), True)
        cuda_bf16 = amp_setup(torch.device("cuda"), True, "bf16")
    assert cuda.dtype == torch.float16 and cuda.scaler is not None
    assert cuda_bf16.dtype == torch.bfloat16 and cuda_bf16.scaler is None
    assert not amp_setup(torch.device("cpu"), False).enabled


def test_json_output_is_only_json(invoke, tmp_path):
    import json

    data = digits_folder(tmp_path / "d", per_class=6, classes=2)
    result = invoke("finetune", "--data", data, *TINY, "--no-pretrained", "--epochs", "1",
                    "--out", tmp_path / "run", "--loss", "focal", "--opt", "sgd", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["run_dir"] == str(tmp_path / "run")
    assert len(payload["epochs"]) == 1 and payload["class_names"] == ["digit0", "digit1"]


def test_grad_scaler_path_unscales_before_clipping_and_accumulates():
    """The float16 + GradScaler path (CUDA's) run on the CPU with torch's CPU GradScaler: with
    loss scaling, clipping and accumulation it must take exactly the unscaled steps."""
    from toolbox.losses import CrossEntropyLoss
    from toolbox.train.engine import Amp, train_epoch
    from toolbox.train.metrics import Meter

    meta = ModelMeta(model="x", num_classes=3, input_size=(3, 4, 4))
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 256, (4, 3, 4, 4), dtype=torch.uint8, generator=generator),
                torch.randint(0, 3, (4,), generator=generator)) for _ in range(4)]

    class Schedule:
        def step_batch(self):
            pass

    def run(scaler) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        train_epoch(model, batches, epoch=1, num_batches=4, optimizer=optimizer,
                    schedule=Schedule(), loss_fn=CrossEntropyLoss(),
                    amp=Amp(False, "cpu", scaler=scaler), meta=meta,
                    device=torch.device("cpu"), meter=Meter(3, torch.device("cpu")),
                    grad_accum=2, clip_grad=0.05)
        return [p.detach().clone() for p in model.parameters()]

    plain = run(None)
    scaled = run(torch.amp.GradScaler("cpu", init_scale=2.0**12))
    for a, b in zip(plain, scaled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    assert not torch.equal(start[1].weight, plain[0])  # it did train
