"""`tb finetune --model file.py:Class` and `pkg.module:Factory`: user code trains, the run
records its spec, and the model file is rebuilt from it (or says where the code went)."""

from __future__ import annotations

import shutil

import pytest
from finetune_helpers import digits_folder

from toolbox.models import load_model_file, load_state_dict


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_folder(tmp_path_factory.mktemp("digits") / "d", per_class=12)


USER_MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def fixed():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 7))
'''


def test_user_model_file_trains_records_its_spec_and_predicts(invoke, digits, tmp_path):
    code = tmp_path / "code" / "my_net.py"
    code.parent.mkdir()
    code.write_text(USER_MODEL)
    run = tmp_path / "run"
    result = invoke("finetune", "--data", digits, "--model", f"{code}:Net", "--img-size", "16",
                    "--epochs", "1", "--batch-size", "8", "--workers", "0", "--out", run)
    assert result.exit_code == 0, result.stderr
    model, meta = load_model_file(run / "model.safetensors")
    assert meta.model == f"{code.resolve()}:Net" and meta.num_classes == 3
    assert model.classifier.out_features == 3  # num_classes was passed to the class
    result = invoke("predict", "--run", run, digits / "digit1", "--json")
    assert result.exit_code == 0, result.stderr
    shutil.move(code, tmp_path / "elsewhere.py")
    result = invoke("predict", "--run", run, digits / "digit1")
    assert result.exit_code == 1
    assert f"trained with --model {code.resolve()}:Net" in result.stderr
    assert "no such file" in result.stderr and "put the model code back" in result.stderr
    assert "Traceback" not in result.stderr


def test_user_factory_without_num_classes_gets_a_new_last_linear(invoke, digits, tmp_path,
                                                                   monkeypatch):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "__init__.py").write_text("")
    (tmp_path / "zoo" / "nets.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    result = invoke("finetune", "--data", digits, "--model", "zoo.nets:fixed",
                    "--img-size", "16", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                    "--out", run)
    assert result.exit_code == 0, result.stderr
    state = load_state_dict(run / "model.safetensors")
    assert state["3.weight"].shape == (3, 4)  # the 7-output Linear replaced by a 3-class one
    assert load_model_file(run / "model.safetensors")[1].model == "zoo.nets:fixed"
