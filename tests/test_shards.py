"""WebDataset shards: `tb datasets pack` (byte-identical, indexed, split K/N), reading them back
with every sample once an epoch (two loader workers, two ranks), training and resuming from
them, and each kind of bad input."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from data_format_helpers import CLASSES, image_tree, shard_keys, tree_rows, write_csv

from toolbox.datasets import open_shards, pack, parse_size, read_samples
from toolbox.errors import ToolboxError, UsageError
from toolbox.models import ModelMeta
from toolbox.train.shard_data import shard_run_data
from toolbox.train.splits import load_splits

META = ModelMeta("test_resnet", 3, list(CLASSES), input_size=(3, 16, 16))


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    """30 training and 9 validation images in shards of about 5 samples each."""
    src = image_tree(tmp_path / "src", per_class=10, val_per_class=3)
    pack(src, tmp_path / "shards", shard_size=8000)
    return tmp_path / "shards"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_pack_writes_indexed_shards_byte_identical_on_a_second_run(packed, tmp_path):
    index = json.loads((packed / "index.json").read_text())
    assert index["classes"] == list(CLASSES)
    train = index["splits"]["train"]
    assert train["samples"] == 30 and index["splits"]["val"]["samples"] == 9
    assert len(train["shards"]) >= 4 and train["class_counts"] == [10, 10, 10]
    urls = sorted(str(p) for p in packed.glob("train-*.tar"))
    keys = shard_keys(urls)
    assert len(keys) == len(set(keys)) == 30 and "train/cat/003" in keys
    for url in urls:  # the index counts what is in each shard
        assert len(shard_keys([url])) == train["shards"][Path(url).name]["samples"]
    with tarfile.open(urls[0]) as tar:  # image bytes as they are, cls as text
        member = next(m for m in tar.getmembers() if m.name.endswith(".png"))
        key = member.name.rsplit(".", 1)[0]
        original = (tmp_path / "src" / (key + ".png")).read_bytes()
        assert tar.extractfile(member).read() == original
        assert tar.extractfile(key + ".cls").read() == str(CLASSES.index(key.split("/")[1])
                                                           ).encode()
        assert {m.mtime for m in tar.getmembers()} == {0}
    again = pack(tmp_path / "src", tmp_path / "again", shard_size=8000)
    assert _files(tmp_path / "again") == _files(packed)
    assert again.splits["train"].samples == 30


def test_pack_shares_k_of_n_cover_every_image_once(tmp_path):
    src = image_tree(tmp_path / "src", per_class=10)
    for k in range(3):
        pack(src, tmp_path / "out", shard=(k, 3), shard_size=8000)
    names = sorted(p.name for p in (tmp_path / "out").glob("index*.json"))
    assert names == ["index-0of3.json", "index-1of3.json", "index-2of3.json"]
    shards = open_shards(str(tmp_path / "out" / "train-*.tar"))
    keys = shard_keys(shards.urls)
    assert len(keys) == len(set(keys)) == 30 == len(shards)


def test_pack_from_a_csv_with_a_split_column(tmp_path):
    src = image_tree(tmp_path / "src", per_class=4)
    rows = tree_rows(src)
    for i, row in enumerate(rows):
        row["split"] = "val" if i % 4 == 0 else "train"
    result = pack(write_csv(src / "t.csv", rows), tmp_path / "out", shard_size=8000,
                  split_column="split")
    assert (result.splits["train"].samples, result.splits["val"].samples) == (9, 3)
    assert len(open_shards(str(tmp_path / "out"))) == 9  # a packed folder: its train shards


def test_cli_pack_and_size_units(invoke, tmp_path):
    assert parse_size("256MB") == 256 * 10**6 and parse_size("1.5GB") == 1_500_000_000
    assert parse_size("500 kb") == 500_000
    with pytest.raises(UsageError):
        parse_size("lots")
    src = image_tree(tmp_path / "src", per_class=3)
    done = invoke("datasets", "pack", src, tmp_path / "out", "--shard-size", "20KB", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["splits"]["train"]["class_counts"] == [3, 3, 3]
    bad = invoke("datasets", "pack", src, tmp_path / "o2", "--shard", "3/2")
    assert bad.exit_code == 2


def _epoch_keys(data, epoch: int) -> list[str]:
    batches = list(data.loader.batches(epoch))
    assert len(batches) == data.loader.num_batches(epoch)
    return data.loader.keys


def test_two_workers_read_every_sample_once_an_epoch(packed):
    splits = load_splits(data=f"{packed}/train-*.tar", dataset=None, root=None,
                         val_split=0.2, seed=0)
    data = shard_run_data(splits, META, batch_size=4, seed=1, workers=2, augment=None,
                          buffer=8, cache=None, sampler="shuffle", record_keys=True)
    everything = shard_keys(splits.train.urls)
    first, second = _epoch_keys(data, 1), _epoch_keys(data, 2)
    assert Counter(first) == Counter(everything) == Counter(second)
    assert first != second  # shard order and the buffer are reshuffled each epoch
    assert _epoch_keys(data, 1) == first  # and seeded: a resumed epoch repeats
    assert sum(len(labels) for _, labels in data.val_loader) == 9


def test_two_ranks_split_the_shards_and_together_read_each_sample_once(packed, monkeypatch):
    splits = load_splits(data=str(packed), dataset=None, root=None, val_split=0.2, seed=0)
    seen, steps = [], set()
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        data = shard_run_data(splits, META, batch_size=4, seed=0, workers=2, augment=None,
                              buffer=4, cache=None, sampler="shuffle", rank=rank, world_size=2,
                              record_keys=True)
        steps.add(data.loader.num_batches())
        seen.append(_epoch_keys(data, 1))
    assert len(steps) == 1  # every rank takes the same number of steps
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(shard_keys(splits.train.urls))


def test_finetune_from_shards_and_resume_at_an_epoch_boundary(invoke, packed, tmp_path):
    run = tmp_path / "run"
    done = invoke("finetune", "--data", f"{packed}/train-{{000000..{_last(packed)}}}.tar",
                  "--val-data", f"{packed}/val-*.tar", "--epochs", "1", "--model",
                  "test_resnet", "--img-size", "16", "--no-pretrained", "--batch-size", "8",
                  "--workers", "2", "--out", run, "--json")
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert (payload["start"]["train_images"], payload["start"]["val_images"]) == (30, 9)
    assert "shards are streamed" in payload["start"]["features"]
    resumed = invoke("finetune", "--resume", run, "--epochs", "2", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert [e["epoch"] for e in json.loads(resumed.stdout)["epochs"]] == [1, 2]
    import torch

    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {8.0}  # ceil(30 / 8) = 4 steps an epoch, two epochs


def test_finetune_from_pipe_commands(invoke, packed, tmp_path):
    # `pipe:` shards are opened by webdataset; their index is read beside the named .tar.
    done = invoke("finetune", "--data", f"pipe:cat {packed}/train-000000.tar",
                  "--val-data", f"pipe:cat {packed}/val-000000.tar", "--epochs", "1",
                  "--model", "test_resnet", "--img-size", "16", "--no-pretrained",
                  "--workers", "0", "--out", tmp_path / "run", "--json")
    assert done.exit_code == 0, done.output
    start = json.loads(done.stdout)["start"]
    index = json.loads((packed / "index.json").read_text())["splits"]
    assert start["train_images"] == index["train"]["shards"]["train-000000.tar"]["samples"]
    assert start["data"].startswith("shards pipe:cat ")


def _last(packed: Path) -> str:
    return max(p.name for p in packed.glob("train-*.tar"))[len("train-"):-len(".tar")]


# ---- bad input -------------------------------------------------------------------------------

def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_broken_samples_are_skipped_with_shard_and_key(packed):
    png = next(packed.parent.glob("src/train/cat/*.png")).read_bytes()
    bad = _tar(packed / "train-000090.tar", {
        "a.png": png, "a.cls": b"0",      # fine
        "b.png": png,                      # no label
        "c.cls": b"1",                     # no image
        "d.png": png, "d.cls": b"7",      # label not in the index
        "e.png": b"junk", "e.cls": b"2",  # not an image
    })
    samples = list(read_samples([str(bad)], list(CLASSES)))
    reasons = {s.key: s.skipped.reason for s in samples if s.skipped}
    assert [s.key for s in samples if not s.skipped] == ["a", "e"]  # e fails when decoded
    assert reasons["b"] == "no label (cls) in the sample"
    assert reasons["c"].startswith("no image in the sample")
    assert reasons["d"] == "label '7' is not in the index (3 classes)"
    assert all(s.skipped.path == f"{bad}:{s.key}" for s in samples if s.skipped)


@pytest.mark.parametrize("where", ["inside an image", "between two samples"])
def test_a_truncated_shard_ends_there_and_the_next_shard_is_read(packed, where):
    shards = open_shards(f"{packed}/train-*.tar")
    urls = shards.urls
    counts = {Path(u).name: n for u, n in zip(urls, shards.counts, strict=True)}
    with tarfile.open(urls[0]) as tar:  # the second sample's image, or its header
        member = tar.getmembers()[3 if where == "inside an image" else 2]
        cut = member.offset_data + 10 if where == "inside an image" else member.offset
    Path(urls[0]).write_bytes(Path(urls[0]).read_bytes()[:cut])
    samples = list(read_samples(urls[:2], list(CLASSES), counts=counts))
    broken = [s.skipped for s in samples if s.skipped and "truncated" in s.skipped.reason]
    assert len(broken) == 1 and broken[0].path.startswith(urls[0] + " after key ")
    good = [s.key for s in samples if not s.skipped]
    assert set(shard_keys([urls[1]])) <= set(good)


def test_patterns_matching_nothing_are_one_line_errors(packed):
    with pytest.raises(ToolboxError, match=r"no such shard .*train-000776\.tar"):
        open_shards(f"{packed}/train-{{000776..000777}}.tar")
    with pytest.raises(ToolboxError, match="matches no file"):
        open_shards(f"{packed}/nothing-*.tar")
    with pytest.raises(ToolboxError, match="unbalanced braces"):
        open_shards(f"{packed}/train-{{0000.tar")
    _tar(packed / "train-000900.tar", {"a.png": b"x", "a.cls": b"0"})
    with pytest.raises(ToolboxError, match=r"train-000900\.tar is not in its index"):
        open_shards(f"{packed}/train-*.tar")


def test_options_that_need_indexable_data_are_refused(packed):
    splits = load_splits(data=str(packed), dataset=None, root=None, val_split=0.2, seed=0)
    with pytest.raises(UsageError, match="--sampler balanced needs indexable data"):
        shard_run_data(splits, META, batch_size=4, seed=0, workers=0, augment=None, buffer=0,
                       cache=None, sampler="balanced")
    with pytest.raises(ToolboxError, match="for 64 processes"):
        shard_run_data(splits, META, batch_size=4, seed=0, workers=0, augment=None, buffer=0,
                       cache=None, sampler="shuffle", world_size=64)
