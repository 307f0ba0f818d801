"""`tb evaluate`: accuracy, per-class scores and the confusion matrix, checked against known
answers and scikit-learn; the PNG and the TensorBoard events read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FASHION_MNIST_DIR
from inference_helpers import COLOURS, mixed_folder, run_copy, shared_run

from toolbox import runs
from toolbox.images import read_image
from toolbox.inference import ConfusionCounter, class_scores, evaluate

NAMES = sorted(COLOURS)  # blue, green, red: the model's class indices


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_run(tmp_path_factory.mktemp("trained"))


@pytest.fixture
def run(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the run, so each test reads only its own TensorBoard events."""
    return run_copy(trained_run, tmp_path / "run")


EXPECTED = np.array([[4, 0, 1], [0, 3, 0], [0, 2, 4]])


@pytest.fixture(scope="module")
def fashion_mnist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data set root, ImageFolder export with train/ and val/ of 240 images each), made once
    from Debian's Fashion-MNIST files by `tb datasets fetch --from-dir --export-folder`."""
    from typer.testing import CliRunner

    from toolbox.cli.app import app

    base = tmp_path_factory.mktemp("fashion-mnist")
    root, export = base / "data", base / "fm"
    result = CliRunner().invoke(app, ["datasets", "fetch", "fashion-mnist", "--root", str(root),
                                      "--from-dir", str(FASHION_MNIST_DIR), "--export-folder",
                                      str(export), "--export-max", "240"])
    assert result.exit_code == 0, result.stderr
    (export / "test").rename(export / "val")  # DIR/train + DIR/val: what finetune reads
    return root, export




def _events(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_known_confusion_matrix_and_sklearn_scores(run, tmp_path):
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    data = mixed_folder(tmp_path / "data")
    result = evaluate(run=run, data=data, device="cpu", workers=0, batch_size=4)
    assert np.array_equal(result.confusion_matrix, EXPECTED)
    y_true = np.repeat(np.arange(3), EXPECTED.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(3), row) for row in EXPECTED])
    assert result.samples == 14
    assert result.top1 == pytest.approx(accuracy_score(y_true, y_pred)) == pytest.approx(11 / 14)
    assert result.top5 == 1.0 and result.top5_k == 3
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2],
                                                 zero_division=0)
    assert [c.name for c in result.classes] == NAMES
    assert [c.precision for c in result.classes] == pytest.approx(p)
    assert [c.recall for c in result.classes] == pytest.approx(r)
    assert [c.f1 for c in result.classes] == pytest.approx(f)
    assert [c.support for c in result.classes] == list(s)
    macro = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert result.averages["macro_f1"] == pytest.approx(macro[2])
    saved = json.loads(result.metrics_json.read_text())
    assert saved["confusion_matrix"] == EXPECTED.tolist() and saved["top1"] == result.top1


def test_counter_matches_sklearn_on_random_scores():
    import torch
    from sklearn.metrics import confusion_matrix, top_k_accuracy_score

    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(500, 7, generator=gen)
    targets = torch.randint(0, 7, (500,), generator=gen)
    counter = ConfusionCounter(7, k=5)
    for start in range(0, 500, 64):  # batch by batch, as evaluate does
        counter.update(scores[start:start + 64], targets[start:start + 64])
    assert np.array_equal(counter.matrix, confusion_matrix(targets, scores.argmax(1),
                                                           labels=range(7)))
    assert counter.topk == pytest.approx(top_k_accuracy_score(targets, scores, k=5,
                                                              labels=range(7)))
    assert counter.top1 == pytest.approx(float((scores.argmax(1) == targets).float().mean()))


def test_class_absent_from_data_has_no_recall():
    scores = class_scores(np.array([[0, 0, 0], [0, 3, 1], [0, 0, 2]]), NAMES)
    assert scores[0].support == 0 and scores[0].recall is None and scores[0].precision == 0.0
    assert scores[1].precision == 1.0 and scores[1].recall == 0.75
    assert scores[2].precision == pytest.approx(2 / 3) and scores[2].f1 == pytest.approx(0.8)


def test_png_and_tensorboard_read_back(run, tmp_path, invoke):
    data = mixed_folder(tmp_path / "data")
    result = invoke("evaluate", "--run", run, "--data", data, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    png = run / "eval" / "data_confusion.png"
    assert str(png) in result.stdout.replace("\n", "")
    assert "78.57%" in result.stdout  # top-1 = 11/14
    image = read_image(png)
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert image.std() > 10  # a real picture, not a blank canvas
    acc = _events(run)
    tag = "eval/data/confusion_matrix"
    assert tag in acc.Tags()["images"]
    event = acc.Images(tag)[0]
    assert (event.height, event.width) == image.shape[:2]
    assert acc.Scalars("eval/data/top1")[0].value == pytest.approx(11 / 14)
    assert acc.Scalars("eval/data/top5")[0].value == pytest.approx(1.0)


def test_unknown_class_is_a_clear_error(run, tmp_path, invoke):
    data = mixed_folder(tmp_path / "data", {"green": ["green"], "purple": ["red"]})
    result = invoke("evaluate", "--run", run, "--data", data)
    assert result.exit_code == 1
    assert "'purple'" in result.stderr and "does not know" in result.stderr
    assert "blue, green, red" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (run / "eval").exists()


def test_subset_of_classes_and_split_layout(run, tmp_path, invoke):
    data = tmp_path / "data"
    mixed_folder(data / "train", {"red": ["red"] * 2, "blue": ["blue"]})
    mixed_folder(data / "val", {"green": ["green"] * 2, "red": ["red", "green"]})
    result = invoke("evaluate", "--run", run, "--data", data, "--json", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["tag"] == "data-val" and out["samples"] == 4
    assert out["confusion_matrix"] == [[0, 0, 0], [0, 2, 0], [0, 1, 1]]
    blue = out["classes"][0]
    assert blue["support"] == 0 and blue["recall"] is None
    assert (tmp_path / "o" / "data-val_confusion.png").is_file()
    assert (tmp_path / "o" / "data-val_metrics.json").is_file()
    train = invoke("evaluate", "--run", run, "--data", data, "--split", "train", "--json",
                   "--no-tensorboard")
    assert json.loads(train.stdout)["top1"] == 1.0
    missing = invoke("evaluate", "--run", run, "--data", data, "--split", "test")
    assert missing.exit_code == 1 and "no 'test' sub-folder" in missing.stderr


def test_bad_images_in_data_are_skipped(run, tmp_path, invoke):
    data = mixed_folder(tmp_path / "data", {"red": ["red"] * 3})
    (data / "red" / "broken.png").write_bytes(b"\x89PNG garbage")
    result = invoke("evaluate", "--run", run, "--data", data, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["samples"] == 3 and out["top1"] == 1.0
    assert [Path(s["file"]).name for s in out["skipped"]] == ["broken.png"]
    assert "broken.png" in result.stderr


def test_usage_errors(run, tmp_path, invoke):
    assert invoke("evaluate", "--run", run).exit_code == 2  # no data
    assert invoke("evaluate", "--data", tmp_path).exit_code == 2  # no model
    both = invoke("evaluate", "--run", run, "--data", tmp_path, "--dataset", "mnist")
    assert both.exit_code == 2


@pytest.mark.slow
def test_fetched_dataset_subset_matches_a_manual_loop(fashion_mnist, tmp_path, tb_subprocess):
    """`--dataset` on real Fashion-MNIST (test split, 200 evenly spaced samples)."""
    import torch

    from toolbox.datasets import open_dataset
    from toolbox.models import ModelMeta, create_model, save_safetensors
    from toolbox.preprocess import eval_tensor

    root, _ = fashion_mnist
    test = open_dataset("fashion-mnist", root, "test")
    torch.manual_seed(0)
    meta = ModelMeta(model="test_convnext3", num_classes=10, class_names=list(test.classes),
                     input_size=(3, 32, 32))
    model = create_model(meta.model, num_classes=10).eval()
    run = tmp_path / "run"
    save_safetensors(model, run / runs.MODEL_FILE, meta)
    proc = tb_subprocess("evaluate", "--run", run, "--dataset", "fashion-mnist", "--root", root,
                         "--max", "200", "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    picks = [round(i * (len(test) - 1) / 199) for i in range(200)]
    with torch.no_grad():
        x = torch.stack([eval_tensor(test[i][0], meta) for i in picks])
        preds = model(x).argmax(1).numpy()
    labels = np.array([test[i][1] for i in picks])
    assert out["samples"] == 200 and out["tag"] == "fashion-mnist-test"
    assert out["top1"] == pytest.approx(float((preds == labels).mean()))
    assert np.array(out["confusion_matrix"]).sum(axis=1).tolist() == np.bincount(
        labels, minlength=10).tolist()


@pytest.mark.slow
def test_accuracy_equals_what_finetune_recorded(fashion_mnist, tmp_path, invoke):
    """`tb finetune` on a small Fashion-MNIST ImageFolder, then `tb evaluate` on the same val
    data: the best weights give the best epoch's val accuracy, last.pt the final epoch's."""
    import csv

    root, export = fashion_mnist
    run = tmp_path / "run"
    trained = invoke("finetune", "--data", export, "--model", "test_convnext3", "--no-pretrained",
                     "--img-size", "32", "--epochs", "2", "--batch-size", "32", "--seed", "0",
                     "--workers", "0", "--out", run)
    assert trained.exit_code == 0, trained.stderr
    rows = list(csv.DictReader((run / runs.METRICS_FILE).open()))
    assert len(rows) == 2
    best = max(rows, key=lambda r: float(r["val_acc1"]))
    for model_args, row, tag in ((("--run", run), best, "fm-val"),
                                 (("--checkpoint", runs.checkpoint_path(run)), rows[-1],
                                  "fm-val-last")):
        result = invoke("evaluate", *model_args, "--data", export, "--json", "--workers", "0")
        assert result.exit_code == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["tag"] == tag and out["samples"] == 240
        assert (run / "eval" / f"{tag}_metrics.json").is_file()
        # The CSV keeps 6 significant digits; compare counts of correct images exactly.
        assert round(out["top1"] * 240) == round(float(row["val_acc1"]) * 240)
        assert round(out["top5"] * 240) == round(float(row["val_acc5"]) * 240)
        assert 0.2 < out["top1"] < 1.0  # learnt something, far from trivial
    # The folders say 'T-shirt_top', the official test split 'T-shirt/top': the same class.
    official = invoke("evaluate", "--run", run, "--dataset", "fashion-mnist", "--root", root,
                      "--max", "100", "--json", "--no-tensorboard")
    assert official.exit_code == 0, official.stderr
    out = json.loads(official.stdout)
    assert out["class_matches"] == {"T-shirt/top": "T-shirt_top"} and out["samples"] == 100
    assert "'T-shirt/top' -> 'T-shirt_top'" in official.stderr


def test_class_name_matching():
    from toolbox.errors import ToolboxError
    from toolbox.inference.evaluate import match_classes

    model = ["T-shirt/top", "Trouser", "Ankle boot"]
    assert match_classes(["Ankle boot", "Trouser"], model, "d") == ([2, 1], {})
    assert match_classes(["T-shirt_top", "ankle_boot"], model, "d") == (
        [0, 2], {"T-shirt_top": "T-shirt/top", "ankle_boot": "Ankle boot"})
    with pytest.raises(ToolboxError, match="'Sock'"):
        match_classes(["Sock", "Trouser"], model, "d")
    with pytest.raises(ToolboxError, match="'a_b'"):  # two model classes look alike: no guess
        match_classes(["a_b"], ["a-b", "a/b"], "d")
    with pytest.raises(ToolboxError, match="several classes"):
        match_classes(["a-b", "a_b"], ["a-b"], "d")
