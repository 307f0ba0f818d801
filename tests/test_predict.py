"""`tb predict`: a trained model classifies image files, bad files are skipped, outputs parse."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import shared_run, write_folder

from toolbox import runs
from toolbox.images import read_image
from toolbox.inference import predict_images
from toolbox.inference._loading import run_dir_of


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, ImageFolder of 4 images per colour) shared by the module's tests."""
    base = tmp_path_factory.mktemp("predict")
    return shared_run(tmp_path_factory.mktemp("trained")), write_folder(base / "data", 4, seed=3)


def _manual_probs(run: Path, files: list[Path]) -> np.ndarray:
    """The textbook way, independent of the service: load, preprocess one by one, softmax."""
    import torch

    from toolbox.models import load_model_file
    from toolbox.preprocess import eval_tensor

    model, meta = load_model_file(run / runs.MODEL_FILE)
    model.eval()
    with torch.no_grad():
        batch = torch.stack([eval_tensor(read_image(f), meta) for f in files])
        return torch.softmax(model(batch), dim=1).numpy()


def test_service_predicts_the_right_colours(trained, tmp_path):
    run, data = trained
    result = predict_images([data], run=run, topk=3, batch_size=5, device="cpu", workers=0)
    assert len(result.predictions) == 12 and not result.skipped
    files = sorted(data.rglob("*.png"))
    expected = _manual_probs(run, files)
    for pred, file, probs in zip(result.predictions, files, expected, strict=True):
        assert Path(pred.file).resolve() == file.resolve()
        assert pred.top[0].label == file.parent.name  # the colour folder is the truth
        assert [g.index for g in pred.top] == list(np.argsort(-probs)[:3])
        assert [g.prob for g in pred.top] == pytest.approx(sorted(probs)[::-1], abs=1e-5)
        assert [g.prob for g in pred.top] == sorted((g.prob for g in pred.top), reverse=True)


def test_batch_size_and_workers_do_not_change_results(trained):
    run, data = trained
    one = predict_images([data], run=run, topk=2, batch_size=1, device="cpu", workers=0)
    many = predict_images([data], run=run, topk=2, batch_size=5, device="cpu", workers=2)
    assert [p.file for p in one.predictions] == [p.file for p in many.predictions]
    for a, b in zip(one.predictions, many.predictions, strict=True):
        assert [g.label for g in a.top] == [g.label for g in b.top]
        assert [g.prob for g in a.top] == pytest.approx([g.prob for g in b.top], abs=1e-5)


def test_amp_bfloat16_on_cpu_gives_the_same_classes(trained):
    run, data = trained
    plain = predict_images([data], run=run, topk=1, device="cpu", workers=0)
    amp = predict_images([data], run=run, topk=1, device="cpu", amp=True, workers=0)
    assert [p.top[0].label for p in amp.predictions] == [p.top[0].label for p in
                                                         plain.predictions]


def _bad_files(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.png").write_text("this is not an image")
    (folder / "empty.jpg").write_bytes(b"")
    return {"notes.png": "not an image", "empty.jpg": "empty file"}


def test_bad_files_are_skipped_and_reported(trained, tmp_path, invoke):
    run, data = trained
    bad = tmp_path / "bad"
    reasons = _bad_files(bad)
    png = (data / "red" / "000.png").read_bytes()
    (bad / "truncated.png").write_bytes(png[: len(png) // 2])
    csv_file = tmp_path / "out" / "preds.csv"
    result = invoke("predict", bad, data / "green" / "001.png", tmp_path / "missing.png",
                    "--run", run, "--device", "cpu", "--csv", csv_file)
    assert result.exit_code == 0, result.stderr
    assert "green/001.png" in result.stdout and "green" in result.stdout
    for name, reason in reasons.items():
        assert f"{name}: {reason}" in result.stderr
    assert "truncated.png: truncated file" in result.stderr
    assert "missing.png: no such file or folder" in result.stderr
    rows = list(csv.DictReader(csv_file.open()))
    assert [r["label_1"] for r in rows if not r["error"]] == ["green"]
    errors = {Path(r["file"]).name: r["error"] for r in rows if r["error"]}
    assert errors == {**reasons, "truncated.png": "truncated file",
                      "missing.png": "no such file or folder"}
    assert list(rows[0]) == ["file", "label_1", "prob_1", "label_2", "prob_2", "label_3",
                             "prob_3", "error"]
    assert not [p for p in csv_file.parent.iterdir() if p.name.startswith(".")]


def test_nothing_predictable_exits_1(trained, tmp_path, invoke):
    run, _ = trained
    bad = tmp_path / "bad"
    _bad_files(bad)
    result = invoke("predict", bad, "--run", run, "--device", "cpu")
    assert result.exit_code == 1
    assert "no image could be predicted" in result.stderr
    assert "notes.png: not an image" in result.stderr  # each file is still reported
    assert "empty.jpg: empty file" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_output_and_glob(trained, invoke, monkeypatch):
    run, data = trained
    monkeypatch.chdir(data.parent)
    result = invoke("predict", "data/*/00[01].png", "--run", run, "--topk", "2", "--json",
                    "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    files = [p["file"] for p in out["predictions"]]
    assert files == sorted(f"data/{c}/00{i}.png" for c in ("blue", "green", "red")
                           for i in (0, 1))
    for pred in out["predictions"]:
        assert len(pred["top"]) == 2
        assert pred["top"][0]["label"] == pred["file"].split("/")[1]
        assert 0.0 <= pred["top"][1]["prob"] <= pred["top"][0]["prob"] <= 1.0
    assert out["skipped"] == []


def test_checkpoint_file_and_its_run_folder(trained, tmp_path, invoke):
    """A `.pt` checkpoint with the meta inside works like the run; its run folder is found."""
    import torch

    from toolbox.models import load_model_file

    run, data = trained
    model, meta = load_model_file(run / runs.MODEL_FILE)
    ckpt = runs.checkpoint_path(tmp_path / "run2", runs.LAST_CHECKPOINT)
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "meta": meta.to_dict(), "epoch": 3}, ckpt)
    assert run_dir_of(ckpt) == tmp_path / "run2"
    result = invoke("predict", data / "blue", "--checkpoint", ckpt, "--json", "--topk", "1")
    assert result.exit_code == 0, result.stderr
    assert {p["top"][0]["label"] for p in json.loads(result.stdout)["predictions"]} == {"blue"}


def test_usage_and_model_errors(trained, tmp_path, invoke):
    run, data = trained
    assert invoke("predict", data).exit_code == 2  # neither --run nor --checkpoint
    assert invoke("predict", data, "--run", run, "--checkpoint", run / "x").exit_code == 2
    missing = invoke("predict", data, "--run", tmp_path / "nope")
    assert missing.exit_code == 1 and "no such run folder" in missing.stderr
    empty = tmp_path / "empty_run"
    empty.mkdir()
    no_model = invoke("predict", data, "--run", empty)
    assert no_model.exit_code == 1 and "holds no run" in no_model.stderr
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"not a checkpoint")
    bad = invoke("predict", data, "--checkpoint", foreign)
    assert bad.exit_code == 1 and "cannot load model file" in bad.stderr


def test_real_tb_subprocess(trained, tb_subprocess, tmp_path):
    run, data = trained
    proc = tb_subprocess("predict", data / "red", "--run", run, "--json", "--topk", "1",
                         cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    preds = json.loads(proc.stdout)["predictions"]
    assert len(preds) == 4 and {p["top"][0]["label"] for p in preds} == {"red"}


def test_loader_items_pickle_for_spawned_workers(trained):
    """Workers started by spawn/forkserver (macOS, newer Pythons) receive the readers pickled."""
    import pickle

    from toolbox.inference._loading import _Items
    from toolbox.models import read_meta
    from toolbox.sources import FileReader, PickedReader

    run, data = trained
    files = sorted(data.rglob("*.png"))
    items = _Items(2, PickedReader(FileReader(files), [3, 0]), read_meta(run / runs.MODEL_FILE))
    clone = pickle.loads(pickle.dumps(items))
    index, tensor, error = clone[0]
    assert (index, error) == (0, None) and tuple(tensor.shape) == (3, 32, 32)
    assert np.allclose(tensor.numpy(), items[0][1].numpy())
