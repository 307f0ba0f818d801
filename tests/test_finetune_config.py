"""`tb finetune --config` and `--print-config`: settings from YAML, flags winning, replay."""

from __future__ import annotations

import csv

import pytest
import yaml
from finetune_helpers import digits_folder

from toolbox.train import FinetuneConfig

TINY = ["--model", "test_resnet", "--img-size", "16", "--no-pretrained", "--batch-size", "8",
        "--workers", "0"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_folder(tmp_path_factory.mktemp("digits") / "d", per_class=12)


def _flat(text: str) -> str:
    """An error shown in Typer's usage box, as one line (box borders and wrapping dropped)."""
    return " ".join(text.replace("│", " ").split())


def _column(run, name: str) -> list[float]:
    return [float(row[name]) for row in csv.DictReader((run / "metrics.csv").open())]


def test_print_config_takes_the_file_and_lets_flags_win(invoke, tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("model: test_resnet\nlr: 0.01\nepochs: 7\nmilestones: [2, 4]\n"
                      "data: photos\n")
    result = invoke("finetune", "--config", config, "--lr", "0.5", "--print-config")
    assert result.exit_code == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["lr"] == 0.5 and printed["epochs"] == 7 and printed["model"] == "test_resnet"
    assert printed["milestones"] == [2, 4] and printed["batch_size"] == 64  # the default
    assert printed["data"].endswith("/photos") and printed["data"].startswith("/")
    assert set(printed) == set(FinetuneConfig().to_dict())


def test_config_file_errors_are_usage_errors(invoke, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("learning_rate: 0.1\nlr: 0.1\n")
    result = invoke("finetune", "--config", typo, "--print-config")
    assert result.exit_code == 2
    assert "unknown setting" in result.stderr and "'learning_rate'" in _flat(result.stderr)
    assert "Traceback" not in result.stderr
    typo.write_text("batch_sise: 3\n")
    result = invoke("finetune", "--config", typo, "--print-config")
    assert result.exit_code == 2 and "did you mean: batch_size" in _flat(result.stderr)
    typo.write_text("epochs: many\n")
    result = invoke("finetune", "--config", typo, "--print-config")
    assert result.exit_code == 2 and "epochs is 'many', which is not a int" in _flat(
        result.stderr)
    result = invoke("finetune", "--config", tmp_path / "gone.yaml", "--print-config")
    assert result.exit_code == 2 and "no such config file" in _flat(result.stderr)


def test_args_yaml_replays_the_run_exactly(invoke, digits, tmp_path):
    first, replay = tmp_path / "first", tmp_path / "replay"
    result = invoke("finetune", "--data", digits, *TINY, "--epochs", "2", "--seed", "3",
                    "--val-split", "0.25", "--lr", "0.01", "--out", first)
    assert result.exit_code == 0, result.stderr
    result = invoke("finetune", "--config", first / "args.yaml", "--out", replay)
    assert result.exit_code == 0, result.stderr
    for name in ("train_loss", "train_acc1", "val_loss", "val_acc1", "lr"):
        assert _column(replay, name) == _column(first, name), name
    replayed = yaml.safe_load((replay / "args.yaml").read_text())
    original = yaml.safe_load((first / "args.yaml").read_text())
    assert {**replayed, "resolved": None} == {**original, "out": str(replay), "resolved": None}
    # Without --out, the finished run's folder is not reused: a new one is made.
    result = invoke("finetune", "--config", first / "args.yaml", "--print-config")
    assert result.exit_code == 0 and yaml.safe_load(result.stdout)["out"] is None
    assert "already holds a run" in result.stderr
