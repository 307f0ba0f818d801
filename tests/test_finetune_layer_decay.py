"""`tb finetune --layer-decay`: timm's layer-wise learning-rate decay, per parameter group,
and a real run that trains with it."""

from __future__ import annotations

import csv

import pytest
import torch
from finetune_helpers import digits_folder

from toolbox.errors import ToolboxError
from toolbox.train.optim import current_lrs, layer_ids, param_groups


def test_layer_decay_scales_each_layer_below_the_top():
    from toolbox.models import create_model

    model = create_model("test_resnet", num_classes=3)
    groups = param_groups(model, "fc", lr=1.0, weight_decay=0.05, layer_decay=0.5)
    lrs = current_lrs(torch.optim.SGD(groups, lr=1.0))
    assert lrs["head"] == 1.0
    backbone = sorted((int(k.rsplit("layer", 1)[1]), v) for k, v in lrs.items() if k != "head")
    _, top = layer_ids(model)  # the head's layer
    assert len(backbone) >= 3 and backbone[0][0] == 0 and backbone[-1][0] < top
    assert all(lr == pytest.approx(0.5 ** (top - layer)) for layer, lr in backbone)
    with pytest.raises(ToolboxError, match="--layer-decay needs layer groups"):
        param_groups(torch.nn.Sequential(torch.nn.Linear(2, 2)), "0", lr=1.0,
                     weight_decay=0.0, layer_decay=0.5)


def test_layer_decay_run_trains_and_is_recorded(invoke, tmp_path):
    digits = digits_folder(tmp_path / "d", per_class=8)
    run = tmp_path / "run"
    result = invoke("finetune", "--data", digits, "--model", "test_resnet", "--img-size", "16",
                    "--no-pretrained", "--batch-size", "8", "--workers", "0", "--epochs", "1",
                    "--layer-decay", "0.5", "--out", run)
    assert result.exit_code == 0, result.stderr
    assert len(list(csv.DictReader((run / "metrics.csv").open()))) == 1
    assert "layer_decay: 0.5" in (run / "args.yaml").read_text()
    result = invoke("finetune", "--data", digits, "--layer-decay", "2", "--print-config")
    assert result.exit_code == 2 and "--layer-decay must be in (0, 1]" in result.stderr
