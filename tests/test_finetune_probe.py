"""Unreadable files in an image folder are left out before the validation split is drawn, so
no class is left with only broken validation images."""

from __future__ import annotations

from finetune_helpers import digits_folder


def test_unreadable_files_are_left_out_before_the_split(tmp_path):
    from toolbox.train import splits as splits_mod

    root = digits_folder(tmp_path / "d", per_class=3, classes=2)
    for n in range(6):  # more broken files than readable ones in digit1
        (root / "digit1" / f"broken{n}.png").write_bytes(b"not a png" if n % 2 else b"")
    splits = splits_mod.load_splits(data=root, dataset=None, root=None, val_split=0.5, seed=0)
    assert len(splits.skipped) == 6
    assert {item.reason for item in splits.skipped} == {"empty file", "not an image"}
    assert all(item.path.startswith("digit1/broken") for item in splits.skipped)
    assert (len(splits.train), len(splits.val)) == (2, 4)
    for source in (splits.train, splits.val):
        assert sorted(set(source.targets.tolist())) == [0, 1]
        for i in range(len(source)):
            assert source.load(i).shape == (16, 16, 3)
