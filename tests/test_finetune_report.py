"""`tb finetune`'s streams: the report (settings included) on stdout, progress on stderr once
per line, top-K never more than the classes, and the settings recorded in args.yaml."""

from __future__ import annotations

import yaml
from finetune_helpers import digits_folder


def test_a_two_class_run_reports_on_stdout_and_records_its_settings(invoke, tmp_path):
    data = digits_folder(tmp_path / "two", per_class=8, classes=2)
    (data / "digit1" / "labels.csv").write_text("not an image")
    out = tmp_path / "run"
    result = invoke("finetune", "--data", data, "--model", "test_resnet", "--no-pretrained",
                    "--img-size", "16", "--epochs", "2", "--batch-size", "16", "--workers", "0",
                    "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    # The record on stdout: the settings, the epochs (top-2, not top-5), the classes.
    for text in ("tb finetune", "run folder", "2 classes", "top-2", "val accuracy"):
        assert text in result.stdout, text
    assert "top-5" not in result.stdout + result.stderr
    # Progress on stderr: each line once, counted in the right grammar.
    progress = [line for line in result.stderr.splitlines() if line.startswith("epoch 2/2")]
    assert progress == sorted(set(progress), key=progress.index), progress
    assert "epoch 2/2: started (1 batch)" in progress
    assert any("top-2" in line for line in result.stderr.splitlines())
    assert ("left out 1 file(s) that are not images: digit1/labels.csv (not an image file "
            "(.csv))") in result.stderr
    # args.yaml: the options, then what they resolved to.
    args = yaml.safe_load((out / "args.yaml").read_text())
    assert args["model"] == "test_resnet" and args["epochs"] == 2
    resolved = args["resolved"]
    assert resolved["classes"] == ["digit0", "digit1"] and resolved["topk"] == 2
    assert resolved["device"] == "cpu" and resolved["input_size"] == [3, 16, 16]
    assert resolved["train_images"] + resolved["val_images"] == 16
