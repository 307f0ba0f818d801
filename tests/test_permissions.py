"""Every file and folder tb writes gets the permissions the user's umask gives a normally
created one (a shared data set or run folder must be readable by a colleague under umask 022,
and private under 077)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from augment_helpers import make_class_folder
from datasets_helpers import tiny_data

from toolbox.datasets import REGISTRY_ENV


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _wrong_modes(root: Path, umask: int) -> list[str]:
    """Paths under `root` whose mode is not what `open()`/`mkdir()` would give under `umask`."""
    wrong = []
    for path in sorted(root.rglob("*")):
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode != want:
            wrong.append(f"{path.relative_to(root)}: {oct(mode)}, expected {oct(want)}")
    return wrong


@pytest.mark.slow
def test_every_command_writes_with_the_users_umask(umask, tmp_path, invoke, monkeypatch):
    out = tmp_path / "out"  # everything tb writes goes below here
    data = tiny_data()
    archive = tmp_path / "in" / "tiny-cifar-10-python.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(data.files[archive.name])
    monkeypatch.setenv(REGISTRY_ENV, str(data.registry(tmp_path / "in" / "registry.json", [])))
    make_class_folder(tmp_path / "in" / "photos")
    pngs = out / "png"
    run = out / "run"
    monkeypatch.setenv("TB_CACHE_DIR", str(out / "cache"))  # the model index is written too
    commands = [
        ("models", "list", "--filter", "resnet18", "--params"),
        ("datasets", "fetch", "tiny-cifar10", "--root", out / "data", "--from-archive", archive,
         "--export-folder", pngs, "--export-max", "12"),
        ("augment", tmp_path / "in" / "photos", out / "aug", "--preset", "light", "--workers",
         "1", "--include-original", "--preview", out / "preview.png", "--tensorboard",
         out / "tb-aug"),
        ("finetune", "--data", pngs / "train", "--model", "test_resnet", "--no-pretrained",
         "--epochs", "1", "--img-size", "16", "--batch-size", "8", "--workers", "0",
         "--device", "cpu", "--out", run),
        ("summary", "test_resnet", "--input-size", "3,16,16", "--tensorboard", out / "tb-sum"),
        ("log-images", pngs / "test", "--logdir", out / "tb-img"),
        ("predict", pngs / "test", "--run", run, "--csv", out / "preds.csv"),
        ("evaluate", "--run", run, "--data", pngs / "test", "--out", out / "eval"),
    ]
    for args in commands:
        result = invoke(*args)
        assert result.exit_code == 0, (args[0], result.stderr)
    assert (run / "model.safetensors").is_file() and (out / "aug" / "pipeline.yaml").is_file()
    assert _wrong_modes(out, umask) == []
