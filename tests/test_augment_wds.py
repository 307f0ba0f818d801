"""`tb augment` with WebDataset shards: shards in and shards out (`--out-format wds`), shards in
and an ImageFolder out, a folder in and shards out; the same bytes whatever the worker count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_format_helpers import CLASSES, image_tree, shard_keys

from toolbox.datasets import open_shards, pack


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    src = image_tree(tmp_path / "src", per_class=4, val_per_class=1, size=16)
    pack(src, tmp_path / "shards", shard_size=8000)
    return tmp_path / "shards"


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def test_shards_in_shards_out_keep_keys_and_labels_and_bytes(invoke, packed, tmp_path):
    one = invoke("augment", f"{packed}/train-*.tar", tmp_path / "a", "--seed", "3",
                 "--copies", "2", "--preset", "light", "--out-format", "wds", "--workers", "1",
                 "--json")
    assert one.exit_code == 0, one.output
    report = json.loads(one.stdout)
    assert (report["images_read"], report["images_written"]) == (12, 24)
    two = invoke("augment", f"{packed}/train-*.tar", tmp_path / "b", "--seed", "3",
                 "--copies", "2", "--preset", "light", "--out-format", "wds", "--workers", "2")
    assert two.exit_code == 0, two.output
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")  # worker count changes nothing
    augmented = open_shards(str(tmp_path / "a" / "train-*.tar"))
    assert len(augmented) == 24 and augmented.classes == list(CLASSES)
    originals = shard_keys(open_shards(f"{packed}/train-*.tar").urls)
    assert sorted(shard_keys(augmented.urls)) == sorted(f"{k}_aug{c}" for k in originals
                                                        for c in (0, 1))
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert index["splits"]["train"]["class_counts"] == [8, 8, 8]


def test_shards_in_files_out_is_an_image_folder(invoke, packed, tmp_path):
    done = invoke("augment", str(packed), tmp_path / "files", "--seed", "0", "--preset",
                  "light", "--workers", "1")
    assert done.exit_code == 0, done.output
    written = sorted(p.relative_to(tmp_path / "files").as_posix()
                     for p in (tmp_path / "files").rglob("*.png"))
    assert len(written) == 12 and written[0] == "cat/train_cat_000_aug0.png"


def test_folder_in_shards_out_and_input_shards_are_never_replaced(invoke, packed, tmp_path):
    done = invoke("augment", tmp_path / "src" / "train", tmp_path / "w", "--seed", "0",
                  "--preset", "light", "--out-format", "wds", "--shard-size", "20KB",
                  "--workers", "1")
    assert done.exit_code == 0, done.output
    shards = open_shards(str(tmp_path / "w"))
    assert len(shards) == 12 and (tmp_path / "w" / "pipeline.yaml").is_file()
    assert not list(tmp_path.glob(".w.augment-*"))  # the staging folder is gone
    refused = invoke("augment", f"{packed}/train-*.tar", packed, "--seed", "0",
                     "--out-format", "wds")
    assert refused.exit_code == 1 and "would replace them" in refused.stderr
