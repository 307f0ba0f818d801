"""A short `tb finetune` run starts lean: what it does not use stays unimported, files left out
are counted honestly, bad milestones stop it at once, and the short-run benchmark runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from finetune_helpers import digits_folder

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "test_resnet", "--img-size", "16", "--epochs", "1", "--workers", "2"]

# Runs the CLI in one process, then lists what that process imported (the loader workers fork
# from it, so they start from the same set).
_LIST_IMPORTS = """
import json, sys
from toolbox.cli.app import app
try:
    app(sys.argv[1:])
except SystemExit as done:
    assert not done.code, done.code
print(json.dumps(sorted(sys.modules)))
"""


def test_finetune_start_up_leaves_out_what_a_run_does_not_use(tmp_path):
    data = digits_folder(tmp_path / "d", per_class=8, classes=2)
    done = subprocess.run(
        [sys.executable, "-c", _LIST_IMPORTS, "finetune", "--data", data, "--out",
         tmp_path / "run", *TINY, "--json"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert "toolbox.train.trainer" in modules and "torch.utils.tensorboard" in modules
    # Not the prediction and evaluation services (the export command's constants used to pull
    # them in), nor imageio, which plain PNGs no longer go through, nor segmentation's trainer,
    # losses, metrics and data code.
    assert not {m for m in modules
                if m.startswith(("toolbox.inference", "imageio", "toolbox.train.segment",
                                 "toolbox.segment"))}


def test_validation_workers_start_with_the_epoch_and_see_each_image_once(tmp_path):
    """Forked when the epoch starts (not from the process an epoch of training grew), the
    validation pass's workers decode while the model trains; the pass still yields every
    validation image once and fills the in-memory cache, so the next pass slices it."""
    import torch

    from toolbox.models import ModelMeta
    from toolbox.train.data import prepare_run_data
    from toolbox.train.splits import load_splits

    splits = load_splits(data=digits_folder(tmp_path / "d", per_class=10, classes=3),
                         dataset=None, root=None, val_split=0.3, seed=0)
    meta = ModelMeta(model="x", num_classes=3, input_size=(3, 16, 16))
    data = prepare_run_data(splits, meta, batch_size=3, seed=0, workers=2, cache=True,
                            augment=None)
    batches = data.start_epoch(1)
    assert data.val_loader.started is not None and not data.val.complete
    assert sum(len(labels) for _, labels in batches) == len(splits.train)
    first = list(data.val_loader)
    assert data.val_loader.started is None and data.val.complete
    assert torch.cat([labels for _, labels in first]).tolist() == data.val.targets.tolist()
    again = list(data.val_loader)  # from the cache now (the EMA pass, later epochs)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))


def test_not_image_files_count_in_the_skipped_total(tmp_path, invoke):
    data = digits_folder(tmp_path / "d", per_class=6, classes=2)
    (data / "digit0" / "notes.txt").write_text("not a picture")
    (data / "digit1" / "broken.png").write_bytes(b"not a png")
    result = invoke("finetune", "--data", data, "--out", tmp_path / "run", *TINY, "--json")
    assert result.exit_code == 0, result.output
    start = json.loads(result.stdout)["start"]
    assert start["skipped"] == 2 and start["train_images"] + start["val_images"] == 12
    human = invoke("finetune", "--data", data, "--out", tmp_path / "run2", *TINY)
    assert human.exit_code == 0, human.output
    assert "2 file(s) skipped" in " ".join(human.stderr.split())


@pytest.mark.parametrize("value", ["0", "-2", "3,0", "2,-1"])
def test_milestones_below_one_are_a_usage_error(tmp_path, invoke, value):
    data = digits_folder(tmp_path / "d", per_class=3, classes=2)
    result = invoke("finetune", "--data", data, "--out", tmp_path / "run", *TINY,
                    "--sched", "multistep", "--milestones", value)
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())  # Typer's usage box wraps long lines
    assert "--milestones must be epoch numbers of at least 1" in message
    assert message.count("--milestones") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_short_run_benchmark_prints_the_ratio():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "finetune.py"), "--short-run", "--quick",
         "--rounds", "1"], capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    match = re.search(r"ratio textbook / tb finetune: (\d+\.\d+)x of the medians", done.stdout)
    assert match and float(match[1]) > 0, done.stdout
