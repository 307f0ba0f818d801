"""CSV label tables: every column option, paths relative to the CSV or to --data, the split
column, skipped rows and the one-line errors; through the service, finetune and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_format_helpers import CLASSES, image_tree, tree_rows, write_csv

from toolbox.csv_source import read_csv_labels
from toolbox.errors import ToolboxError
from toolbox.train.splits import load_splits


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return image_tree(tmp_path / "images", per_class=6)


def test_default_columns_paths_relative_to_the_csv_folder(tree):
    table = read_csv_labels(write_csv(tree / "labels.csv", tree_rows(tree)))
    assert (table.path_column, table.label_column) == ("image", "label")
    assert table.source.classes == list(CLASSES)
    assert len(table.source) == 18 and table.is_val is None
    by_path = dict(zip(table.source.paths, table.source.targets, strict=True))
    assert by_path[(tree / "dog" / "003.png").resolve()] == CLASSES.index("dog")


def test_path_column_found_after_other_columns_and_labels_beside_images_dir(tree, tmp_path):
    # The first column names ids, not files: the default picks the second. The CSV lies
    # elsewhere; --labels with --data makes paths relative to the images folder.
    rows = [{"id": str(i), "file": r["image"], "kind": r["label"]}
            for i, r in enumerate(tree_rows(tree))]
    csv_file = write_csv(tmp_path / "meta" / "t.csv", rows)
    table = read_csv_labels(csv_file, images_dir=tree, label_column="kind")
    assert table.path_column == "file" and len(table.source) == 18
    explicit = read_csv_labels(csv_file, images_dir=tree, path_column="file",
                               label_column="kind")
    assert explicit.source.paths == table.source.paths


def test_split_column_gives_train_and_val_and_missing_rows_are_skipped(tree):
    rows = tree_rows(tree)
    for i, row in enumerate(rows):
        row["part"] = "val" if i % 3 == 0 else "Train"
    rows.append({"image": "dog/none.png", "label": "dog", "part": "train"})
    csv_file = write_csv(tree / "labels.csv", rows)
    splits = load_splits(data=csv_file, dataset=None, root=None, val_split=0.2, seed=0,
                         split_column="part")
    assert (len(splits.train), len(splits.val)) == (12, 6)
    assert [(s.path, s.reason) for s in splits.skipped] == [("dog/none.png", "file not found")]
    assert "split by 'part'" in splits.description


def test_unreadable_rows_are_skipped_before_the_stratified_split(tree):
    (tree / "cat" / "000.png").write_bytes(b"not a png")
    csv_file = write_csv(tree / "labels.csv", tree_rows(tree))
    splits = load_splits(data=csv_file, dataset=None, root=None, val_split=0.5, seed=0)
    assert len(splits.train) + len(splits.val) == 17
    assert [s.reason for s in splits.skipped] == ["not an image"]


@pytest.mark.parametrize(("rows", "kwargs", "message"), [
    ([{"image": "cat/000.png", "label": "cat"}, {"image": "./cat/000.png", "label": "cat"}],
     {}, "lines 2 and 3 both name ./cat/000.png"),
    ([{"image": "cat/000.png", "label": ""}], {}, "line 2: empty label"),
    ([{"name": "nothing.png", "label": "cat"}], {}, "no column names existing files"),
    ([{"image": "cat/000.png", "tag": "cat"}], {}, "unknown column of labels.csv 'label'"),
    ([{"image": "cat/000.png", "label": "cat"}], {"path_column": "img"},
     "unknown column of labels.csv 'img'"),
    ([{"image": "cat/000.png", "label": "cat", "s": "test"}], {"split_column": "s"},
     "split 'test' in 's' is not train or val"),
])
def test_bad_tables_are_one_line_errors(tree, rows, kwargs, message):
    with pytest.raises(ToolboxError) as info:
        read_csv_labels(write_csv(tree / "labels.csv", rows), **kwargs)
    assert message in info.value.message
    assert "\n" not in str(info.value)


def test_finetune_and_evaluate_read_the_same_csv(invoke, tree, tmp_path):
    rows = tree_rows(tree)
    for i, row in enumerate(rows):
        row["split"] = "val" if i % 3 == 0 else "train"
    csv_file = write_csv(tmp_path / "t.csv", rows)
    run = tmp_path / "run"
    done = invoke("finetune", "--data", tree, "--labels", csv_file, "--split-column", "split",
                  "--model", "test_resnet", "--img-size", "16", "--no-pretrained",
                  "--epochs", "1", "--batch-size", "4", "--workers", "0", "--out", run,
                  "--json")
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert (payload["start"]["train_images"], payload["start"]["val_images"]) == (12, 6)
    args = (run / "args.yaml").read_text()
    assert "split_column: split" in args and f"labels: {csv_file.resolve()}" in args
    scored = invoke("evaluate", "--run", run, "--data", tree, "--labels", csv_file,
                    "--split-column", "split", "--json", "--no-tensorboard")
    assert scored.exit_code == 0, scored.output
    result = json.loads(scored.stdout)
    assert result["samples"] == 6
    assert result["top1"] == pytest.approx(payload["best_val_acc1"], abs=1e-9)


def test_finetune_csv_error_is_one_line(invoke, tree):
    csv_file = write_csv(tree / "labels.csv", [{"image": "cat/000.png", "label": ""}])
    done = invoke("finetune", "--data", csv_file, "--epochs", "1")
    assert done.exit_code == 1
    assert done.stderr.strip().count("\n") <= 1 and "empty label" in done.stderr
    assert np.all([line.startswith(("error", "hint")) for line in
                   done.stderr.strip().splitlines()])


def test_a_frozen_run_on_a_csv_caches_features_keyed_by_file(invoke, tree, tmp_path):
    # Rows of a table are files: the feature cache names them by path, size and mtime, so a
    # second run on the same table computes nothing.
    csv_file = write_csv(tree / "labels.csv", tree_rows(tree))
    common = ["--data", csv_file, "--model", "test_resnet", "--img-size", "16",
              "--no-pretrained", "--freeze", "--epochs", "1", "--workers", "0", "--json",
              "--feature-cache", tmp_path / "features"]
    first = invoke("finetune", *common, "--out", tmp_path / "a")
    assert first.exit_code == 0, first.output
    second = invoke("finetune", *common, "--out", tmp_path / "b")
    assert second.exit_code == 0, second.output
    lines = [json.loads(r.stdout)["start"]["features"] for r in (first, second)]
    assert lines[0].startswith("cached (18 computed") and lines[1].startswith("cached (0 computed")
