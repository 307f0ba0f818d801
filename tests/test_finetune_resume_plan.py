"""`tb finetune --resume RUN`: extending a run re-plans its schedule; changed flags are applied
and listed, or refused when they cannot change, each read back from the run folder."""

from __future__ import annotations

import csv
import itertools
import math

import pytest
import yaml
from finetune_helpers import digits_folder

from toolbox.train import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_folder(tmp_path_factory.mktemp("digits") / "d", per_class=12)


def _config(digits, out, **kwargs) -> FinetuneConfig:
    base = {"data": str(digits), "model": "test_resnet", "img_size": 16, "pretrained": False,
            "epochs": 2, "batch_size": 8, "workers": 0, "out": str(out), "val_split": 0.25}
    return FinetuneConfig(**{**base, **kwargs})


def _flat(text: str) -> str:
    """An error shown in Typer's usage box, as one line (box borders and wrapping dropped)."""
    return " ".join(text.replace("│", " ").split())


def _column(run, name: str) -> list[float]:
    return [float(row[name]) for row in csv.DictReader((run / "metrics.csv").open())]


def test_resume_with_more_epochs_replans_the_schedule(invoke, digits, tmp_path):
    run = tmp_path / "run"
    finetune(_config(digits, run, epochs=2, lr=1e-3))
    result = invoke("finetune", "--resume", run, "--epochs", "4")
    assert result.exit_code == 0, result.stderr
    assert "changed on resume: epochs 2 -> 4" in result.stderr
    # As if 4 epochs had been planned: cosine from 1e-3, evaluated after 0..3 epochs of 4;
    # epochs 1-2 keep the lr they trained with under the 2-epoch plan.
    planned = [1e-3 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    lrs = _column(run, "lr")
    assert lrs == pytest.approx([1e-3, 5e-4, planned[2], planned[3]], rel=1e-5)
    assert all(a >= b for a, b in itertools.pairwise(lrs))  # never wraps around
    assert yaml.safe_load((run / "args.yaml").read_text())["epochs"] == 4


def test_resume_applies_and_lists_a_changed_lr(invoke, digits, tmp_path):
    run = tmp_path / "run"
    finetune(_config(digits, run, epochs=2, lr=1e-3))
    result = invoke("finetune", "--resume", run, "--epochs", "3", "--lr", "0.0005", "--amp")
    assert result.exit_code == 0, result.stderr
    for line in ("changed on resume: lr 0.001 -> 0.0005", "changed on resume: amp False -> True"):
        assert line in result.stderr
    # The 3-epoch cosine plan at a peak of 5e-4, at its third epoch.
    assert _column(run, "lr")[2] == pytest.approx(5e-4 * (1 + math.cos(2 * math.pi / 3)) / 2)
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["lr"] == 0.0005 and args["amp"] is True


def test_resume_refuses_flags_it_cannot_apply(invoke, digits, tmp_path):
    run = tmp_path / "run"
    finetune(_config(digits, run, epochs=1))
    before = (run / "metrics.csv").read_text()
    result = invoke("finetune", "--resume", run, "--model", "resnet18")
    assert result.exit_code == 2
    error = _flat(result.stderr)
    assert "--model cannot change on resume (the run has 'test_resnet'" in error
    assert f"--config {run}/args.yaml" in error
    result = invoke("finetune", "--resume", run, "--epochs", "3", "--seed", "9")
    assert result.exit_code == 2 and "--seed cannot change on resume" in _flat(result.stderr)
    result = invoke("finetune", "--resume", run, "--config", run / "args.yaml")
    assert result.exit_code == 2 and "drop one of them" in _flat(result.stderr)
    # The same values as the run's own are no change at all.
    result = invoke("finetune", "--resume", run, "--model", "test_resnet", "--print-config")
    assert result.exit_code == 0 and "changed on resume" not in result.stderr
    assert (run / "metrics.csv").read_text() == before
