"""Transfer learning for real: a frozen ImageNet backbone (weights from the installed package)
beats the same frozen backbone with random weights, at identical settings."""

from __future__ import annotations

import pytest
from finetune_helpers import digits_folder

from toolbox.train import FinetuneConfig, finetune


@pytest.mark.slow
def test_frozen_pretrained_beats_frozen_random_by_ten_points(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))  # the package
    data = digits_folder(tmp_path / "digits", per_class=40, classes=10)
    accuracy = {}
    for pretrained in (True, False):
        result = finetune(FinetuneConfig(
            data=str(data), val_split=0.25, img_size=64, freeze=True, pretrained=pretrained,
            epochs=5, batch_size=32, workers=0, out=str(tmp_path / f"run-{pretrained}")))
        accuracy[pretrained] = result.best_val_acc1
    assert accuracy[True] >= accuracy[False] + 0.10, accuracy
