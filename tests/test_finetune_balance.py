"""`tb finetune --class-weights auto` and `--sampler balanced` on imbalanced folders, read back
from the loss, the batches drawn and the start table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from finetune_helpers import TINY_ARGS, digits_folder, flat, pick, write_image_folder

from toolbox.losses import build_loss
from toolbox.models import ModelMeta
from toolbox.sources import ArraySource
from toolbox.train.balance import class_counts, inverse_frequency, sample_weights
from toolbox.train.data import prepare_run_data
from toolbox.train.sampling import rank_share
from toolbox.train.splits import DataSplits, load_splits

MANY, FEW, MID = 40, 8, 20  # images per class on disk: 5:1 between the largest and smallest


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    """Real digits, 40 of "many", 8 of "few", 20 of "mid" (classes sort as few, many, mid)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = np.clip(np.round(raw.images * 255 / 16), 0, 255).astype(np.uint8)
    images = images.repeat(2, axis=1).repeat(2, axis=2)
    keep = np.concatenate([pick(images, raw.target, [c], n)[0]
                           for c, n in ((0, MANY), (1, FEW), (2, MID))])
    labels = np.array([0] * MANY + [1] * FEW + [2] * MID)
    return write_image_folder(tmp_path_factory.mktemp("imbalanced") / "d", keep, labels,
                              {0: "many", 1: "few", 2: "mid"})


def _json(stdout: str) -> dict:
    return json.loads(stdout)


def test_weights_are_inverse_frequency_of_the_training_split(imbalanced):
    splits = load_splits(data=imbalanced, dataset=None, root=None, val_split=0.25, seed=0)
    counts = class_counts(splits.train.targets, len(splits.classes))
    # The stratified split keeps a quarter of each class for validation.
    assert splits.classes == ["few", "many", "mid"] and counts == [6, 30, 15]
    weights = inverse_frequency(counts)
    assert np.mean(weights) == pytest.approx(1.0)
    inverse = [1 / 6, 1 / 30, 1 / 15]
    assert weights == pytest.approx([w * 3 / sum(inverse) for w in inverse])
    assert weights[0] / weights[1] == pytest.approx(5.0)  # 30 / 6
    assert inverse_frequency([5, 5, 5]) == pytest.approx([1.0, 1.0, 1.0])
    assert inverse_frequency([4, 0, 12]) == pytest.approx([1.5, 0.0, 0.5])


def test_weighted_losses_use_the_weights():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([0, 1, 1])
    weights = [0.4, 1.6]
    per_sample = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    w = torch.tensor(weights)[targets]
    expected = float((w * per_sample).sum() / w.sum())
    assert float(build_loss("ce", class_weights=weights)(logits, targets)) == pytest.approx(
        expected)
    # Focal with gamma 0 is weighted cross-entropy, its per-class alpha the weights.
    focal = build_loss("focal", focal_gamma=0.0, class_weights=weights)
    assert float(focal(logits, targets)) == pytest.approx(expected)
    assert float(build_loss("ce")(logits, targets)) == pytest.approx(float(per_sample.mean()))


def _array_splits(counts: list[int]) -> DataSplits:
    """A split with `counts[c]` 8x8 images of class c (the pixel value encodes the index)."""
    targets = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
    images = np.zeros((len(targets), 8, 8, 3), dtype=np.uint8)
    source = ArraySource(images, targets, [f"c{c}" for c in range(len(counts))])
    return DataSplits(source, source, source.classes, "arrays")


def _drawn(data, epoch: int) -> list[int]:
    return [int(t) for _, targets in data.loader.batches(epoch) for t in targets]


def test_balanced_sampler_draws_every_class_about_equally():
    splits = _array_splits([900, 90, 10])
    meta = ModelMeta(model="x", num_classes=3, input_size=(3, 8, 8))
    common = dict(batch_size=50, seed=3, workers=0, cache=True, augment=None)
    balanced = prepare_run_data(splits, meta, sampler="balanced", **common)
    drawn = _drawn(balanced, 1)
    assert len(drawn) == 1000  # an epoch is as long as the split
    per_class = np.bincount(drawn, minlength=3)
    assert all(280 <= n <= 390 for n in per_class), per_class  # a third each, not 90/9/1 %
    # Seeded: the same seed draws the same epoch, another epoch another draw.
    again = prepare_run_data(splits, meta, sampler="balanced", **common)
    assert _drawn(again, 1) == drawn and _drawn(again, 2) != drawn
    shuffled = np.bincount(_drawn(prepare_run_data(splits, meta, **common), 1), minlength=3)
    assert shuffled.tolist() == [900, 90, 10]  # the default: each image once


def test_balanced_sampler_under_ddp_each_rank_draws_its_share():
    splits = _array_splits([600, 60, 30])
    meta = ModelMeta(model="x", num_classes=3, input_size=(3, 8, 8))
    world = 2
    drawn = []
    for rank in range(world):
        data = prepare_run_data(splits, meta, batch_size=23, seed=0, workers=0, cache=True,
                                augment=None, sampler="balanced", rank=rank, world_size=world)
        ours = _drawn(data, 1)
        assert len(ours) == 345  # every rank takes the same steps: half the epoch each
        # Each rank draws from its own share, which holds every class.
        assert sorted(set(rank_share(splits.train, rank, world).targets)) == [0, 1, 2]
        assert all(80 <= n <= 150 for n in np.bincount(ours, minlength=3))
        drawn += ours
    per_class = np.bincount(drawn, minlength=3)
    assert all(190 <= n <= 270 for n in per_class), per_class


def test_sample_weights_follow_the_class():
    targets = np.array([0, 0, 0, 1])
    weights = sample_weights(targets, class_counts(targets, 2))
    assert weights[:3].sum() == pytest.approx(weights[3])  # each class half the mass


@pytest.mark.slow
def test_start_table_lists_counts_only_past_3_to_1(invoke, imbalanced, tmp_path):
    result = invoke("finetune", "--data", imbalanced, *TINY_ARGS, "--epochs", "1", "--val-split",
                    "0.25", "--json", "--out", tmp_path / "skewed")
    assert result.exit_code == 0, result.stderr
    start = _json(result.stdout)["start"]
    assert start["class_counts"] == {"few": 6, "many": 30, "mid": 15}
    hint = [n for n in start["notes"] if "imbalanced" in n]
    assert hint and "--class-weights auto" in hint[0] and "--sampler balanced" in hint[0]
    assert "5.0:1" in hint[0]
    even = digits_folder(tmp_path / "even", per_class=8, classes=2)
    result = invoke("finetune", "--data", even, *TINY_ARGS, "--epochs", "1", "--json", "--out",
                    tmp_path / "even_run")
    assert result.exit_code == 0, result.stderr
    start = _json(result.stdout)["start"]
    assert start["class_counts"] == {} and not [n for n in start["notes"] if "imbalanced" in n]


def test_class_weights_and_sampler_in_a_run(invoke, imbalanced, tmp_path):
    run = tmp_path / "weighted"
    result = invoke("finetune", "--data", imbalanced, *TINY_ARGS, "--epochs", "1", "--val-split",
                    "0.25", "--class-weights", "auto", "--out", run)
    assert result.exit_code == 0, result.stderr
    weights = inverse_frequency([6, 30, 15])
    shown = ", ".join(f"{w:.2f}" for w in weights)
    assert f"class weights (inverse frequency, mean 1): {shown}" in flat(result.stderr)
    assert "few 6, many 30, mid 15" in flat(result.stderr)  # the table row stays
    assert "consider --class-weights" not in flat(result.stderr)  # the hint does not
    # Resuming may switch the sampler (it changes how the remaining epochs draw).
    result = invoke("finetune", "--resume", run, "--epochs", "2", "--sampler", "balanced")
    assert result.exit_code == 0, result.stderr
    assert "changed on resume: sampler shuffle -> balanced" in flat(result.stderr)
    assert "balanced sampler" in flat(result.stderr)


def test_bad_values_are_usage_errors(invoke, imbalanced, tmp_path):
    result = invoke("finetune", "--data", imbalanced, *TINY_ARGS, "--sampler", "balance",
                    "--print-config")
    assert result.exit_code == 2 and "unknown sampler 'balance'" in flat(result.stderr)
    assert "did you mean: balanced" in flat(result.stderr)
    result = invoke("finetune", "--data", imbalanced, *TINY_ARGS, "--class-weights", "auto",
                    "--loss", "bce", "--print-config")
    assert result.exit_code == 2
    assert "--class-weights does not apply to the bce loss" in flat(result.stderr)
    result = invoke("finetune", "--data", imbalanced, *TINY_ARGS, "--class-weights", "auto",
                    "--mixup", "0.2", "--print-config")
    assert result.exit_code == 2
    assert "--class-weights does not apply with --mixup or --cutmix" in flat(result.stderr)
    assert "--sampler balanced instead" in flat(result.stderr)
    result = invoke("finetune", "--task", "segment", "--data", tmp_path, "--sampler",
                    "balanced", "--print-config")
    assert result.exit_code == 2
    assert "--sampler balanced does not apply to --task segment" in flat(result.stderr)
    assert "Traceback" not in result.stderr


def test_config_files_know_the_new_keys(invoke, tmp_path):
    import yaml

    config = tmp_path / "recipe.yaml"
    config.write_text("sampler: balanced\nclass_weights: auto\nresize: letterbox\n")
    result = invoke("finetune", "--config", config, "--resize", "squash", "--print-config")
    assert result.exit_code == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert (printed["sampler"], printed["class_weights"], printed["resize"]) == (
        "balanced", "auto", "squash")
    default = yaml.safe_load(invoke("finetune", "--print-config").stdout)
    assert (default["sampler"], default["class_weights"], default["resize"]) == (
        "shuffle", "none", "crop")


def test_repeated_draws_of_an_image_are_augmented_differently():
    # Five images of class 1 among 95 of class 0: each is drawn about ten times an epoch.
    counts = [95, 5]
    targets = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (len(targets), 8, 8, 3), dtype=np.uint8)
    source = ArraySource(images, targets, ["c0", "c1"])
    splits = DataSplits(source, source, source.classes, "arrays")
    meta = ModelMeta(model="x", num_classes=2, input_size=(3, 8, 8))
    data = prepare_run_data(splits, meta, batch_size=100, seed=0, workers=0, cache=True,
                            augment="Affine(rotate=(-45, 45))", sampler="balanced")
    batch, labels = next(iter(data.loader.batches(1)))
    minority = batch[labels == 1]
    assert len(minority) > 30  # about half the draws, from five images
    # More distinct pictures than images: repeats got their own augmentation.
    assert len({bytes(image.numpy()) for image in minority}) > 20
    again, _ = next(iter(prepare_run_data(
        splits, meta, batch_size=100, seed=0, workers=0, cache=True,
        augment="Affine(rotate=(-45, 45))", sampler="balanced").loader.batches(1)))
    assert torch.equal(again, batch)  # and the epoch is reproducible
