"""`tb finetune --mixup/--cutmix`: soft targets from timm's Mixup, a run that trains on them, and
the combinations that cannot mix refused in one line."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from finetune_helpers import TINY_ARGS, digits_folder, flat

from toolbox.train.mixing import BatchMixer, hard_labels, soft_target_loss


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_folder(tmp_path_factory.mktemp("digits") / "d", per_class=12)


@pytest.mark.parametrize("mixup, cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixing_makes_soft_targets(mixup, cutmix):
    mixer = BatchMixer(mixup=mixup, cutmix=cutmix, label_smoothing=0.0, num_classes=3, seed=0)
    mixer.set_epoch(2)  # seed 0's first epoch happens to draw a cut of nothing
    x = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 3, 8, 8).clone()
    y = torch.tensor([0, 1, 2, 0, 1])
    mixed, soft = mixer(x.clone(), y)
    assert soft.shape == (5, 3) and torch.allclose(soft.sum(1), torch.ones(5))
    assert ((soft > 0) & (soft < 1)).any()  # soft, not one-hot
    assert torch.equal(soft[4], torch.tensor([0.0, 1.0, 0.0]))  # the odd one out stays whole
    assert not torch.equal(mixed[:4], x[:4]) and torch.equal(mixed[4], x[4])
    mixer.set_epoch(2)
    assert torch.equal(mixer(x.clone(), y)[1], soft)  # seeded per epoch


def test_label_smoothing_goes_into_the_targets_and_the_loss_takes_them():
    mixer = BatchMixer(mixup=0.4, cutmix=0.0, label_smoothing=0.1, num_classes=4, seed=1)
    mixer.set_epoch(1)
    _, soft = mixer(torch.zeros(3, 3, 4, 4), torch.tensor([0, 1, 2]))
    assert soft.min() > 0 and torch.allclose(soft.sum(1), torch.ones(3))
    assert torch.equal(hard_labels(soft)[2:], torch.tensor([2]))  # the unmixed odd one
    assert torch.equal(hard_labels(torch.tensor([1, 0])), torch.tensor([1, 0]))
    logits = torch.randn(3, 4)
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    assert soft_target_loss()(logits, soft).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.slow
def test_a_mixup_run_trains_on_soft_targets(invoke, digits, tmp_path):
    run = tmp_path / "run"
    result = invoke("finetune", "--data", digits, *TINY_ARGS, "--epochs", "2", "--mixup", "0.4",
                    "--cutmix", "1.0", "--label-smoothing", "0.1", "--lr", "0.01",
                    "--out", run)
    assert result.exit_code == 0, result.stderr
    assert "mixup 0.4, cutmix 1: soft targets" in flat(result.stderr)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 2 and all(math.isfinite(float(r["train_loss"])) for r in rows)
    assert (run / "model.safetensors").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--loss", "focal"], "--mixup and --cutmix train on soft targets, which the focal loss "
                          "cannot take"),
    (["--task", "segment"], "--mixup and --cutmix do not apply to --task segment"),
    (["--mixup", "-1"], "--mixup and --cutmix must not be negative"),
])
def test_combinations_that_cannot_mix_are_usage_errors(invoke, digits, extra, message):
    result = invoke("finetune", "--data", digits, *TINY_ARGS, "--mixup", "0.2", *extra,
                    "--print-config")
    assert result.exit_code == 2
    assert message in flat(result.stderr) and "Traceback" not in result.stderr


def test_config_files_and_resume_know_the_mixing_keys(invoke, digits, tmp_path):
    import yaml

    from toolbox.train import FinetuneConfig, finetune

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("mixup: 0.3\nema: true\n")
    result = invoke("finetune", "--config", recipe, "--cutmix", "0.5", "--print-config")
    assert result.exit_code == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert (printed["mixup"], printed["cutmix"], printed["ema"]) == (0.3, 0.5, True)
    run = tmp_path / "run"
    finetune(FinetuneConfig(data=str(digits), model="test_resnet", img_size=16,
                            pretrained=False, epochs=1, batch_size=8, workers=0, out=str(run)))
    result = invoke("finetune", "--resume", run, "--epochs", "2", "--mixup", "0.2",
                    "--print-config")
    assert result.exit_code == 0, result.stderr
    assert "changed on resume: mixup 0.0 -> 0.2" in result.stderr
    assert yaml.safe_load(result.stdout)["mixup"] == 0.2
