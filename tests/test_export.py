"""`tb export`: ONNX and TorchScript files that agree with the run, and ONNX wherever tb takes a
model (predict, evaluate, summary)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import SIZE, shared_run, write_folder

from toolbox import runs
from toolbox.export import EXPORTERS, ParityFailed, export_model
from toolbox.images import read_image
from toolbox.inference import evaluate, predict_images


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, ImageFolder of 4 images per colour), read-only for the tests."""
    base = tmp_path_factory.mktemp("export")
    return shared_run(tmp_path_factory.mktemp("trained")), write_folder(base / "data", 4, seed=5)


@pytest.fixture(scope="module", params=EXPORTERS)
def exported(request, trained, tmp_path_factory: pytest.TempPathFactory):
    """One ONNX export of the run per exporter (checked on the colour images), shared by the
    module: the tests that read it run once for each."""
    run, data = trained
    out = tmp_path_factory.mktemp("onnx") / "colours.onnx"
    result = export_model(run, out=out, check=8, check_data=data,
                          legacy_exporter=request.param == "torchscript")
    assert result.exporter == request.param and result.exporter_note is None
    return result


def _torch_probs(run: Path, files: list[Path]) -> np.ndarray:
    """The run's model the textbook way: load, preprocess as tb does, softmax."""
    import torch

    from toolbox.models import load_model_file
    from toolbox.preprocess import eval_tensor

    model, meta = load_model_file(run / runs.MODEL_FILE)
    with torch.no_grad():
        batch = torch.stack([eval_tensor(read_image(f), meta) for f in files])
        return torch.softmax(model.eval()(batch), dim=1).numpy()


def _unit_rgb(files: list[Path]) -> np.ndarray:
    """What a user feeds the export: RGB in [0, 1], NCHW, at the run's size (the test images
    are 40x48, so this is the run's resize and centre crop done by hand)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    out = []
    for file in files:
        tensor = torch.from_numpy(read_image(file)).permute(2, 0, 1)
        tensor = F.center_crop(F.resize(tensor, SIZE, antialias=True), [SIZE, SIZE])
        out.append(tensor.float() / 255)
    return torch.stack(out).numpy()


def test_onnx_export_agrees_and_runs_without_tb(trained, exported):
    import onnx
    import onnxruntime as ort

    run, data = trained
    assert exported.parity.passed and exported.parity.samples == 8
    assert exported.parity.top1_agreement == 1.0 and exported.parity.max_abs_diff < 1e-4
    assert exported.parity.images == str(data)
    proto = onnx.load(str(exported.file))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == ["blue", "green", "red"]
    assert meta["input_size"] == f"3,{SIZE},{SIZE}" and meta["output"] == "logits"
    assert meta["source_run"] == str(run.resolve())
    assert not [p for p in exported.file.parent.iterdir() if p.name.startswith(".")]
    # A user with onnxruntime alone: five images in one batch (the batch axis is dynamic).
    files = sorted(data.rglob("*.png"))[::2][:5]
    session = ort.InferenceSession(str(exported.file), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": _unit_rgb(files)})[0]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = exp / exp.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, _torch_probs(run, files), atol=2e-3)
    assert [f.parent.name for f in files] == [["blue", "green", "red"][i]
                                              for i in probs.argmax(axis=1)]


def test_predict_with_onnx_matches_the_run(trained, exported, tmp_path, invoke):
    run, data = trained
    ours = predict_images([data], checkpoint=exported.file, topk=3, device="cpu", workers=0)
    theirs = predict_images([data], run=run, topk=3, device="cpu", workers=0)
    assert ours.device == "onnxruntime CPU"
    assert [p.file for p in ours.predictions] == [p.file for p in theirs.predictions]
    for a, b in zip(ours.predictions, theirs.predictions, strict=True):
        assert [g.label for g in a.top] == [g.label for g in b.top]
        assert [g.prob for g in a.top] == pytest.approx([g.prob for g in b.top], abs=1e-4)
    csv_file = tmp_path / "preds.csv"
    result = invoke("predict", data / "red", "--checkpoint", exported.file, "--json",
                    "--topk", "1", "--csv", csv_file)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert {p["top"][0]["label"] for p in out["predictions"]} == {"red"}
    assert out["device"] == "onnxruntime CPU"
    assert csv_file.read_text().splitlines()[0] == "file,label_1,prob_1,error"
    amp = invoke("predict", data, "--checkpoint", exported.file, "--amp")
    assert amp.exit_code == 1 and "--amp does not apply" in amp.stderr


def test_evaluate_with_onnx_gives_the_runs_scores(trained, exported, tmp_path):
    run, data = trained
    ours = evaluate(checkpoint=exported.file, data=data, device="cpu", workers=0,
                    out=tmp_path / "onnx", write_tensorboard=False)
    theirs = evaluate(run=run, data=data, device="cpu", workers=0, out=tmp_path / "torch",
                      write_tensorboard=False)
    assert ours.confusion_matrix == theirs.confusion_matrix
    assert ours.top1 == theirs.top1 == 1.0
    assert json.loads(ours.metrics_json.read_text())["device"] == "onnxruntime CPU"
    assert ours.confusion_png.is_file()


def test_summary_of_an_onnx_file(trained, exported, invoke):
    from toolbox.models import load_model_file

    run, _ = trained
    result = invoke("summary", exported.file, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["inputs"] == [{"name": "image", "shape": ["batch", 3, SIZE, SIZE],
                              "dtype": "float32"}]
    assert out["outputs"] == [{"name": "logits", "shape": ["batch", 3], "dtype": "float32"}]
    assert out["opset"] == exported.opset == (18 if exported.exporter == "dynamo" else 17)
    model, _ = load_model_file(run / runs.MODEL_FILE)
    weights = sum(p.numel() for p in model.parameters())
    # The graph's weights are the model's plus the normalisation constants (mean, std).
    assert weights <= out["total_params"] <= weights + 6
    assert json.loads(out["metadata"]["class_names"]) == ["blue", "green", "red"]
    table = invoke("summary", exported.file)
    assert table.exit_code == 0 and "Total params" in table.stdout
    assert "class_names" in table.stdout


def test_torchscript_with_softmax_and_extra_files(trained, tmp_path, invoke):
    import torch

    run, data = trained
    out = tmp_path / "m.torchscript"
    result = invoke("export", run, "--format", "torchscript", "--softmax", "--out", out,
                    "--check-data", data, "--check", "6", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["parity"]["compared"] == "probabilities" and report["parity"]["passed"]
    assert report["parity"]["samples"] == 6 and report["opset"] is None
    extra = {"class_names": "", "input_size": "", "source_run": ""}
    model = torch.jit.load(str(out), _extra_files=extra)  # the values come back as bytes
    assert json.loads(extra["class_names"]) == ["blue", "green", "red"]
    assert extra["input_size"].decode() == f"3,{SIZE},{SIZE}"
    files = sorted(data.rglob("*.png"))[:3]
    probs = model(torch.from_numpy(_unit_rgb(files))).detach().numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, _torch_probs(run, files), atol=2e-3)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_no_check_and_static_batch(trained, tmp_path, invoke, exporter):
    run, _ = trained
    out = tmp_path / "static.onnx"
    legacy = ["--legacy-exporter"] if exporter == "torchscript" else []
    result = invoke("export", run, "--out", out, "--no-check", "--no-dynamic-batch", "--json",
                    *legacy)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["parity"] is None
    assert json.loads(result.stdout)["exporter"] == exporter
    assert "parity not checked (--no-check)" in result.stderr
    summary = json.loads(invoke("summary", out, "--json").stdout)
    assert summary["inputs"][0]["shape"] == [1, 3, SIZE, SIZE]


@pytest.mark.slow
def test_the_runs_own_validation_data_in_a_real_process(trained, tmp_path, tb_subprocess):
    """A run that records its data folder is checked on its validation split, and the file
    lands in the run folder."""
    run, data = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / runs.ARGS_FILE).write_text(f"model: test_convnext3\ndata: {data}\n"
                                       "val_split: 0.5\nseed: 0\n")
    proc = tb_subprocess("export", copy, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert Path(report["file"]) == copy / "model.onnx" and (copy / "model.onnx").is_file()
    parity = report["parity"]
    assert parity["samples"] == 6  # half of 4 images in each of 3 classes
    assert str(data) in parity["images"] and parity["top1_agreement"] == 1.0


def test_disagreeing_export_leaves_no_file(trained, tmp_path, monkeypatch, invoke):
    """An export whose graph is wrong (here: its classes in the wrong order, injected into the
    exported module) fails the check, exits 1 and leaves the previous file untouched."""
    import toolbox.export._graph as graph

    run, data = trained
    forward = graph.DeployModel.forward
    monkeypatch.setattr(graph.DeployModel, "forward", lambda self, x: forward(self, x).flip(1))
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier export")
    with pytest.raises(ParityFailed) as caught:
        export_model(run, out=out, check=6, check_data=data)
    assert caught.value.result.top1_agreement < 0.99
    assert out.read_bytes() == b"an earlier export"
    result = invoke("export", run, "--out", tmp_path / "new.onnx", "--check-data", data,
                    "--check", "6", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["parity"]["passed"] is False
    assert "agrees with the PyTorch model on only" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def _tiny_vit_run(folder: Path) -> Path:
    """An untrained run of a small ViT (attention needs ONNX opset 14)."""
    from toolbox.models import ModelMeta, create_model, save_safetensors

    meta = ModelMeta(model="test_vit", num_classes=2, class_names=["a", "b"],
                     input_size=(3, SIZE, SIZE), model_kwargs={"img_size": SIZE})
    model = create_model(meta.model, num_classes=2, **meta.model_kwargs)
    save_safetensors(model, folder / runs.MODEL_FILE, meta)
    return folder


def test_bad_inputs_are_one_line_and_leave_no_file(trained, tmp_path, invoke):
    run, data = trained
    empty = tmp_path / "empty_run"
    empty.mkdir()
    checks = [
        (("export", empty), "holds no run"),
        (("export", _tiny_vit_run(tmp_path / "vit"), "--opset", "13", "--no-check"),
         "cannot export to ONNX opset 13"),
        (("export", run / runs.MODEL_FILE, "--out", tmp_path / "x.onnx", "--check-data",
          tmp_path / "empty_run"), "no readable image for the parity check"),
        (("export", tmp_path / "vit" / runs.MODEL_FILE, "--out", tmp_path / "y.onnx"),
         "no images to check the export against"),
    ]
    for args, message in checks:
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob(".*"))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage that is not a protobuf")
    for args in (("predict", data, "--checkpoint", corrupt),
                 ("evaluate", "--checkpoint", corrupt, "--data", data),
                 ("summary", corrupt)):
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.stderr)
        assert "corrupt.onnx" in result.stderr and "Traceback" not in result.stderr
    usage = invoke("export", run, "--no-check", "--check-data", data)
    assert usage.exit_code == 2
    torchscript_opset = invoke("export", run, "--format", "torchscript", "--opset", "13")
    assert torchscript_opset.exit_code == 2
    assert "--opset applies to --format onnx only" in torchscript_opset.stderr



def test_a_model_the_exporters_cannot_handle_is_one_line_and_leaves_no_file(trained, tmp_path,
                                                                            monkeypatch, invoke):
    """A forward that returns more than the logits (a None beside them, as a model returning
    optional extras would), or that the tracers cannot follow (here it raises while traced, as
    an operation they do not support does), fails each format with one line and a hint."""
    import torch

    import toolbox.export._graph as graph

    run, data = trained
    forward = graph.DeployModel.forward

    def untraceable(self, x):
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            raise RuntimeError("an operation the tracer does not support")
        return forward(self, x)

    cases = [
        (lambda self, x: [forward(self, x), None], "onnx",
         "the model returns a list, not one tensor", "make its forward return the logits"),
        (lambda self, x: [forward(self, x), None], "torchscript",
         "the model returns a list, not one tensor", "make its forward return the logits"),
        (untraceable, "torchscript", "cannot trace the model to TorchScript: RuntimeError: an "
         "operation the tracer does not support", "try --format onnx"),
        (untraceable, "onnx", "cannot export the model to ONNX: RuntimeError: an operation the "
         "tracer does not support", "try --format torchscript"),
    ]
    for patched, fmt, message, hint in cases:
        monkeypatch.setattr(graph.DeployModel, "forward", patched)
        result = invoke("export", run, "--format", fmt, "--out", tmp_path / f"m.{fmt}",
                        "--check-data", data)
        assert result.exit_code == 1, (fmt, result.stderr)
        assert message in result.stderr and hint in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1
    assert list(tmp_path.iterdir()) == []


def test_the_legacy_exporter_stands_in_where_dynamo_cannot(trained, tmp_path, monkeypatch,
                                                           invoke):
    """A model torch.export cannot follow (here it raises while dynamo traces it) is written by
    the TorchScript-based exporter, checked as usual, with a note saying so; an opset below what
    dynamo writes goes the same way, and --legacy-exporter is for ONNX only."""
    import onnx
    import torch

    import toolbox.export._graph as graph

    run, data = trained
    forward = graph.DeployModel.forward

    def not_for_dynamo(self, x):
        if torch.compiler.is_compiling():
            raise RuntimeError("an operation torch.export does not support")
        return forward(self, x)

    monkeypatch.setattr(graph.DeployModel, "forward", not_for_dynamo)
    out = tmp_path / "fallback.onnx"
    result = invoke("export", run, "--out", out, "--check-data", data, "--check", "6")
    assert result.exit_code == 0, result.stderr
    stderr = " ".join(result.stderr.split())  # the note is wrapped to the terminal
    assert "the dynamo exporter could not export the model" in stderr
    assert "does not support): used the TorchScript-based exporter" in stderr
    assert "torchscript exporter" in result.stdout and "passed" in result.stdout
    assert onnx.load(str(out)).opset_import[0].version == 18
    monkeypatch.setattr(graph.DeployModel, "forward", forward)
    low = invoke("export", run, "--out", tmp_path / "low.onnx", "--opset", "13", "--no-check",
                 "--json")
    assert low.exit_code == 0, low.stderr
    report = json.loads(low.stdout)
    assert report["exporter"] == "torchscript" and report["opset"] == 13
    assert "opset 13 is below what the dynamo exporter writes" in report["exporter_note"]
    misuse = invoke("export", run, "--format", "torchscript", "--legacy-exporter")
    assert misuse.exit_code == 2
    assert "--legacy-exporter applies to --format onnx only" in misuse.stderr
