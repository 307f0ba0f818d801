"""`tb augment --shard K/N`: N runs, one shard each, write exactly what one run writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from augment_helpers import make_class_folder, photo, tree_hashes, write_png

from toolbox.augment import augment_folder

SPEC = "Fliplr(0.5); Affine(rotate=(-25, 25)); AdditiveGaussianNoise(scale=(0, 20))"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    make_class_folder(root, per_class=4)
    # Two inputs with one output name under --format png: every shard must skip the same one.
    write_png(root / "dog" / "chelsea1.png", photo("chelsea"))
    for index, name in enumerate(("coffee", "rocket", "chelsea")):  # 12 inputs: no shard is empty
        write_png(root / "bird" / f"{name}{index}.png", photo(name))
    return root


@pytest.mark.slow
def test_three_shards_write_exactly_the_bytes_of_one_run(src, tmp_path, monkeypatch):
    """Each shard runs in its own folder (a machine of its own) with the same relative OUT,
    so even OUT/pipeline.yaml, which names OUT, is the same file."""
    options = dict(spec=SPEC, seed=5, copies=2, include_original=True, image_format="png",
                   workers=1)

    def run(folder: str, shard: tuple[int, int] | None = None):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        return augment_folder(src, "out", shard=shard, **options)

    whole = run("whole")
    shards = [run(f"machine{k}", (k, 3)) for k in range(3)]

    expected = tree_hashes(tmp_path / "whole" / "out")
    union: dict[str, str] = {}
    for k in range(3):
        files = tree_hashes(tmp_path / f"machine{k}" / "out")
        assert files.pop("pipeline.yaml") == expected["pipeline.yaml"]
        assert not set(files) & set(union)  # no file is written by two shards
        union.update(files)
    union["pipeline.yaml"] = expected["pipeline.yaml"]
    assert union == expected
    assert len(union) == 1 + 3 * 11  # pipeline.yaml; 12 inputs less one clash, 3 files each
    assert [r.shard for r in shards] == ["0/3", "1/3", "2/3"]
    assert all(r.images_found for r in shards)
    assert sum(r.images_found for r in shards) == whole.images_found == 12
    assert sum(r.images_written for r in shards) == whole.images_written == 22
    assert [s.path for r in shards for s in r.skipped] == [s.path for s in whole.skipped]


def test_shard_cli_json_retry_and_usage_errors(src, tmp_path, invoke):
    out = tmp_path / "out"
    first = invoke("augment", src, out, "--aug", SPEC, "--seed", "1", "--shard", "1/2",
                   "--workers", "1", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["shard"] == "1/2" and report["images_written"] == report["images_found"] > 0
    # A retried shard (--skip-existing) finds its outputs and writes nothing again.
    again = invoke("augment", src, out, "--aug", SPEC, "--seed", "1", "--shard", "1/2",
                   "--skip-existing", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["already_done"] == report["images_found"]
    # The other shard writes into the same OUT: the same pipeline and seed are the same run.
    other = invoke("augment", src, out, "--aug", SPEC, "--seed", "1", "--shard", "0/2",
                   "--workers", "1", "--json")
    assert other.exit_code == 0, other.output
    second = json.loads(other.stdout)
    assert second["images_written"] == second["images_found"] == 12 - report["images_found"]

    for bad in ("2/2", "1", "a/3", "-1/3"):
        result = invoke("augment", src, out, "--seed", "1", "--shard", bad)
        assert result.exit_code == 2 and "K/N" in result.stderr
    no_seed = invoke("augment", src, tmp_path / "x", "--shard", "0/2")
    assert no_seed.exit_code == 2 and "--seed" in no_seed.stderr
    assert not (tmp_path / "x").exists()


def test_a_shard_without_files_succeeds_and_says_so(tmp_path, invoke):
    write_png(tmp_path / "src" / "only.png", photo())
    results = [invoke("augment", tmp_path / "src", tmp_path / "out", "--seed", "0",
                      "--shard", f"{k}/4", "--workers", "1") for k in range(4)]
    assert [r.exit_code for r in results] == [0, 0, 0, 0]
    assert sum("holds none of the 1 images" in r.stderr for r in results) == 3
    assert [p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".png"] == [
        "only_aug0.png"]
