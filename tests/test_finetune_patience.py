"""`tb finetune --patience/--min-delta`: early stopping, read back from metrics.csv and
result.yaml, and the rule it follows."""

from __future__ import annotations

import csv

import pytest
import yaml
from finetune_helpers import digits_folder

from toolbox.train.stopping import early_stop_reason

TINY = ["--model", "test_resnet", "--img-size", "16", "--no-pretrained", "--batch-size", "8",
        "--workers", "0"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_folder(tmp_path_factory.mktemp("digits") / "d", per_class=12)


def _metrics(run) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def test_patience_stops_early_and_says_why(invoke, digits, tmp_path):
    run = tmp_path / "run"
    # Nothing can gain 50 points, so epoch 1 is the best and two stale epochs stop the run.
    result = invoke("finetune", "--data", digits, *TINY, "--epochs", "6", "--patience", "2",
                    "--min-delta", "0.5", "--out", run)
    assert result.exit_code == 0, result.stderr
    assert [int(r["epoch"]) for r in _metrics(run)] == [1, 2, 3]
    outcome = yaml.safe_load((run / "result.yaml").read_text())
    assert outcome["status"] == "stopped early" and outcome["epochs_trained"] == 3
    assert outcome["reason"].startswith("early stop after epoch 3")
    assert "stopped: early stop after epoch 3" in result.stdout


def test_early_stop_rule():
    assert early_stop_reason([0.5, 0.6, 0.6], 2, 0.0) is None
    assert "for 2 epochs" in early_stop_reason([0.5, 0.6, 0.6, 0.55], 2, 0.0)
    assert early_stop_reason([0.5, 0.52, 0.53], 2, 0.05) is not None
    assert early_stop_reason([0.5, 0.9], None, 0.0) is None
