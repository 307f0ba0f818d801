"""`tb finetune --ema`: the weight average, its validation beside the raw weights', the better
of the two kept as model.safetensors (read back), and resume continuing the average."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from finetune_helpers import TINY_ARGS, digits_folder, read_events

from toolbox.models import load_state_dict
from toolbox.train import FinetuneConfig, finetune
from toolbox.train.checkpoint import CheckpointSaver, TrainState
from toolbox.train.ema import WeightEma, best_of, with_ema
from toolbox.train.results import EpochRow


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_folder(tmp_path_factory.mktemp("digits") / "d", per_class=12)


def _config(digits, out, **kwargs) -> FinetuneConfig:
    base = {"data": str(digits), "model": "test_resnet", "img_size": 16, "pretrained": False,
            "epochs": 3, "batch_size": 8, "workers": 0, "out": str(out), "val_split": 0.25,
            "ema": True, "ema_decay": 0.9}
    return FinetuneConfig(**{**base, **kwargs})


def _metrics(run) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def _load(path):
    return torch.load(path, weights_only=True)


def test_weight_ema_warms_up_then_averages():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    ema = WeightEma(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # the warm-up's first step copies (decay 0)
    assert torch.equal(ema.module.weight, model.weight)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # then it averages: between the last two weights
    assert torch.all(ema.module.weight > start + 1) and torch.all(ema.module.weight < start + 2)
    assert ema.ema.get_decay(10_000) == 0.5  # the warm-up ends at the set decay
    state = ema.state_dict()
    twin = WeightEma(torch.nn.Linear(4, 2), decay=0.5)
    twin.load_state_dict(state)
    assert twin.steps == 2 and torch.equal(twin.module.weight, ema.module.weight)


def test_a_row_with_better_ema_weights_is_scored_and_described_by_them():
    raw = EpochRow(epoch=1, train_loss=1, train_acc1=0.5, val_loss=1.0, val_acc1=0.5,
                   val_acc5=1, lr=0.1, images_per_s=1, epoch_time_s=1, per_class=[0.5, 0.5])
    better = EpochRow(**{**raw.__dict__, "val_loss": 0.5, "val_acc1": 0.75,
                         "per_class": [1.0, 0.5]})
    row = with_ema(raw, better)
    assert best_of(row) == (0.75, "ema") and row.per_class == [1.0, 0.5]
    assert row.val_acc1 == 0.5 and row.ema_val_loss == 0.5  # the raw figures stay
    worse = with_ema(better, raw)
    assert best_of(worse) == (0.75, "raw") and worse.per_class == [1.0, 0.5]
    assert best_of(raw) == (0.5, "raw")  # without --ema


def test_the_saver_writes_the_ema_weights_when_they_are_the_best(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = WeightEma(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    from toolbox.models import ModelMeta
    from toolbox.train.optim import LrSchedule

    meta = ModelMeta(model="x", num_classes=2, class_names=["a", "b"], input_size=(3, 8, 8),
                     mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear", crop_pct=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = FinetuneConfig(ema=True)
    state = TrainState(model, opt, LrSchedule(opt, cfg, 1), None, torch.device("cpu"), cfg,
                       meta, ["a", "b"], epoch=1, ema=ema, best_weights="ema")
    CheckpointSaver(tmp_path).save_epoch(state, improved=True)
    on_disk = load_state_dict(tmp_path / "model.safetensors")
    assert all(torch.equal(on_disk[k], v) for k, v in ema.module.state_dict().items()
               if k in on_disk)
    assert not torch.equal(on_disk["0.weight"], model.state_dict()["0.weight"])
    saved = _load(tmp_path / "checkpoints" / "best.pt")
    assert saved["best_weights"] == "ema" and saved["ema"]["steps"] == 0


@pytest.mark.slow
def test_ema_run_validates_both_and_keeps_the_better_weights(digits, tmp_path):
    run = tmp_path / "run"
    # Seed 3 at lr 0.01: the EMA weights validate better than the raw ones after epoch 1
    # (7/9 against 6/9), and no later epoch beats that, so model.safetensors holds them.
    result = finetune(_config(digits, run, lr=0.01, seed=3))
    rows = _metrics(run)
    assert [r["saved"] for r in rows] == ["ema", "", ""]
    assert result.best_weights == "ema" and result.best_epoch == 1
    assert result.best_val_acc1 == pytest.approx(float(rows[0]["ema_val_acc1"]))
    assert float(rows[0]["ema_val_acc1"]) > float(rows[0]["val_acc1"])
    last = _load(run / "checkpoints" / "last.pt")
    raw, ema = last["model"], last["ema"]["weights"]
    assert last["ema"]["steps"] == 3 * 3  # 27 training images in batches of 8: 3 steps/epoch
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    best = _load(run / "checkpoints" / "best.pt")
    on_disk = load_state_dict(run / "model.safetensors")
    assert all(torch.equal(on_disk[k], best["ema"]["weights"][k]) for k in on_disk)
    assert any(not torch.equal(on_disk[k], best["model"][k]) for k in on_disk)
    outcome = yaml.safe_load((run / "result.yaml").read_text())
    assert outcome["best_weights"] == "ema"
    events = read_events(run)
    assert [e.value for e in events.Scalars("acc1/val_ema")] == pytest.approx(
        [float(r["ema_val_acc1"]) for r in rows], rel=1e-5)
    assert [e.value for e in events.Scalars("loss/val_ema")] == pytest.approx(
        [float(r["ema_val_loss"]) for r in rows], rel=1e-5)


@pytest.mark.slow
def test_resume_continues_the_average(digits, tmp_path):
    straight = finetune(_config(digits, tmp_path / "straight", epochs=2, lr=0.01))

    def stop_after_one(row):
        if row.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(_config(digits, tmp_path / "resumed", epochs=2, lr=0.01),
                 on_epoch=stop_after_one)
    assert _load(tmp_path / "resumed" / "checkpoints" / "last.pt")["ema"]["steps"] == 3
    resumed = finetune(FinetuneConfig(), resume=tmp_path / "resumed")
    a = _load(tmp_path / "straight" / "checkpoints" / "last.pt")["ema"]
    b = _load(tmp_path / "resumed" / "checkpoints" / "last.pt")["ema"]
    assert a["steps"] == b["steps"] == 6
    for key, value in a["weights"].items():
        torch.testing.assert_close(b["weights"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert [r.ema_val_acc1 for r in resumed.epochs] == pytest.approx(
        [r.ema_val_acc1 for r in straight.epochs], abs=1e-9)


@pytest.mark.slow
def test_cli_ema_run_reports_the_kept_weights_in_json(invoke, digits, tmp_path):
    run = tmp_path / "run"
    result = invoke("finetune", "--data", digits, *TINY_ARGS, "--epochs", "1", "--ema",
                    "--ema-decay", "0.9", "--val-split", "0.25", "--lr", "0.01", "--seed", "3",
                    "--out", run, "--json")
    assert result.exit_code == 0, result.stderr
    import json

    data = json.loads(result.stdout)
    assert data["best_weights"] == "ema"
    assert data["epochs"][0]["ema_val_acc1"] > data["epochs"][0]["val_acc1"]
    assert yaml.safe_load((run / "args.yaml").read_text())["ema"] is True
    # The results table gives the EMA weights' accuracy a column of its own.
    shown = invoke("finetune", "--data", digits, *TINY_ARGS, "--epochs", "1", "--ema",
                   "--ema-decay", "0.9", "--val-split", "0.25", "--lr", "0.01", "--seed", "3",
                   "--out", tmp_path / "shown")
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    header = [cell.strip() for cell in next(x for x in lines if "train loss" in x).split("┃")]
    row = [cell.strip() for cell in next(x for x in lines if x.split()[:2] == ["1", "│"])
           .split("│")]
    column = header.index("val acc") + 1
    ema_acc = float(_metrics(tmp_path / "shown")[0]["ema_val_acc1"])
    assert (header[column], row[column]) == ("EMA acc", f"{100 * ema_acc:.1f}%")
    bad = invoke("finetune", "--data", digits, *TINY_ARGS, "--ema", "--ema-decay", "1.5",
                 "--print-config")
    assert bad.exit_code == 2 and "--ema-decay must be between 0 and 1" in bad.stderr


def test_resume_may_turn_ema_on_and_says_so(invoke, digits, tmp_path):
    run = tmp_path / "run"
    finetune(_config(digits, run, epochs=1, ema=False))
    result = invoke("finetune", "--resume", run, "--epochs", "2", "--ema", "--print-config")
    assert result.exit_code == 0, result.stderr
    assert "changed on resume: ema False -> True" in result.stderr
    assert yaml.safe_load(result.stdout)["ema"] is True


@pytest.mark.slow
def test_segmentation_validates_the_ema_weights_too(invoke, tmp_path):
    from segment_helpers import fashion_segmentation

    data = fashion_segmentation(tmp_path / "seg", root=tmp_path / "fmnist")
    run = tmp_path / "run"
    result = invoke("finetune", "--task", "segment", "--data", data, "--model", "test_resnet",
                    "--no-pretrained", "--img-size", "32", "--batch-size", "16", "--workers",
                    "0", "--epochs", "1", "--ema", "--out", run, "--json")
    assert result.exit_code == 0, result.stderr
    import json

    outcome = json.loads(result.stdout)
    rows = _metrics(run)
    row = outcome["epochs"][0]
    assert float(rows[0]["ema_val_miou"]) == pytest.approx(row["ema_val_miou"], rel=1e-5)
    assert outcome["best_weights"] == rows[0]["saved"]
    assert outcome["best_val_acc1"] == pytest.approx(max(row["val_miou"], row["ema_val_miou"]))
    events = read_events(run)
    assert [e.value for e in events.Scalars("miou/val_ema")] == pytest.approx(
        [row["ema_val_miou"]], rel=1e-5)
