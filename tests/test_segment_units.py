"""Segmentation building blocks: the seed's Dice loss, the other losses, scores, pairing of
images and masks, the encoder-decoder models, overlays and palette PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toolbox.errors import ToolboxError
from toolbox.images import read_mask, write_image
from toolbox.models import DECODERS, create_segmenter
from toolbox.segment import (
    IGNORE_INDEX,
    SEGMENT_LOSSES,
    BinaryDiceLoss,
    build_segment_loss,
    load_segment_splits,
    scores,
)
from toolbox.segment.overlay import colorize, overlay, write_palette_png


def seed_dice_loss(inputs: torch.Tensor, targets: torch.Tensor, smooth: float = 1) -> torch.Tensor:
    """The tutorial's DiceLoss.forward, verbatim."""
    inputs = torch.sigmoid(inputs)
    inputs = inputs.view(-1)
    targets = targets.view(-1)
    intersection = (inputs * targets).sum()
    dice = (2. * intersection + smooth) / (inputs.sum() + targets.sum() + smooth)
    return 1 - dice


def test_binary_dice_is_the_seed_formula_in_value_and_gradient():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 9, 7, generator=generator, dtype=torch.float64)
    masks = (torch.rand(3, 9, 7, generator=generator) > 0.6).long()

    ours_x = x.clone().requires_grad_(True)
    logits = torch.cat([torch.zeros_like(ours_x), ours_x], dim=1)  # what the segmenter returns
    ours = BinaryDiceLoss()(logits, masks)
    ours.backward()

    seed_x = x.clone().requires_grad_(True)
    seed = seed_dice_loss(seed_x, masks.unsqueeze(1).to(torch.float64))
    seed.backward()

    assert ours.item() == pytest.approx(seed.item(), abs=1e-12)
    assert torch.allclose(ours_x.grad, seed_x.grad, atol=1e-12)
    assert 0.0 < ours.item() < 1.0


def test_dice_loss_picks_sigmoid_for_one_foreground_class_and_softmax_otherwise():
    assert isinstance(build_segment_loss("dice", num_classes=2), BinaryDiceLoss)
    multi = build_segment_loss("dice", num_classes=4)
    perfect = F.one_hot(torch.tensor([[0, 1], [2, 3]]), 4).movedim(-1, 0)[None].float() * 50
    assert multi(perfect, torch.tensor([[[0, 1], [2, 3]]])).item() == pytest.approx(0, abs=1e-6)
    wrong = perfect.roll(1, dims=1)
    # Every class: one true pixel, one predicted elsewhere: dice (0 + 1) / (1 + 1 + 1).
    expected = 1 - 1 / 3
    assert multi(wrong, torch.tensor([[[0, 1], [2, 3]]])).item() == pytest.approx(expected)


@pytest.mark.parametrize("name", list(SEGMENT_LOSSES))
def test_every_loss_ignores_255_pixels(name):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 5, generator=generator, requires_grad=True)
    masks = torch.randint(0, 3, (2, 5, 5), generator=generator)
    loss = build_segment_loss(name, num_classes=3)
    base = loss(logits, masks)
    # Changing the logits of ignored pixels changes nothing, value or gradient.
    ignored = masks.clone()
    ignored[:, :2] = IGNORE_INDEX
    changed = logits.detach().clone()
    changed[:, :, :2] = 100.0
    changed.requires_grad_(True)
    a, b = loss(logits, ignored), loss(changed, ignored)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    b.backward()
    assert changed.grad[:, :, :2].abs().max().item() == 0.0
    assert a.item() != pytest.approx(base.item())
    all_ignored = torch.full_like(masks, IGNORE_INDEX)
    assert torch.isfinite(loss(logits, all_ignored))


def test_ce_on_two_classes_is_binary_cross_entropy_on_the_logit():
    x = torch.randn(2, 1, 4, 4)
    masks = (torch.rand(2, 4, 4) > 0.5).long()
    logits = torch.cat([torch.zeros_like(x), x], dim=1)
    ce = build_segment_loss("ce", num_classes=2)(logits, masks)
    bce = F.binary_cross_entropy_with_logits(x[:, 0], masks.float())
    assert ce.item() == pytest.approx(bce.item(), rel=1e-5)


def test_unknown_loss_suggests_close_names():
    with pytest.raises(ToolboxError) as err:
        build_segment_loss("dise", num_classes=2)
    assert "dice" in str(err.value.message) + str(err.value.hint)


def test_scores_from_a_confusion_matrix():
    matrix = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])  # class 2: absent and never predicted
    result = scores(matrix)
    assert result.iou[0] == pytest.approx(8 / 11) and result.iou[1] == pytest.approx(3 / 6)
    assert np.isnan(result.iou[2])
    assert result.miou == pytest.approx((8 / 11 + 3 / 6) / 2)
    assert result.dice[1] == pytest.approx(6 / 9) and result.mean_dice == pytest.approx(6 / 9)
    assert result.pixel_acc == pytest.approx(11 / 14)


def _pair(root, split, stem, image, mask):
    write_image(root / split / "images" / f"{stem}.png", image)
    if mask is not None:
        write_image(root / split / "masks" / f"{stem}.png", mask.astype(np.uint8))


def test_bad_pairs_are_skipped_with_one_line_each(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    good = (rng.random((12, 10)) > 0.5).astype(np.uint8)
    for i in range(4):
        _pair(tmp_path, "train", f"ok{i}", image, good)
    _pair(tmp_path, "train", "nomask", image, None)
    _pair(tmp_path, "train", "small", image, good[:6])
    _pair(tmp_path, "train", "toohigh", image, good * 7)
    ignore = good.copy()
    ignore[0] = IGNORE_INDEX
    _pair(tmp_path, "val", "v0", image, ignore)
    _pair(tmp_path, "val", "v1", image, good)
    (tmp_path / "classes.txt").write_text("background\nthing\n")

    splits = load_segment_splits(data=tmp_path, val_split=0.2, seed=0)
    assert splits.classes == ["background", "thing"]
    assert [p.image.stem for p in splits.train] == ["ok0", "ok1", "ok2", "ok3"]
    assert [p.image.stem for p in splits.val] == ["v0", "v1"]
    reasons = {Path(bad.path).stem: bad.reason for bad in splits.skipped}
    assert {bad.path for bad in splits.skipped} == {
        "train/images/nomask.png", "train/masks/small.png", "train/masks/toohigh.png"}
    assert reasons["nomask"].startswith("no mask masks/nomask.png")
    assert reasons["small"] == "mask is 10x6, image is 10x12"
    assert reasons["toohigh"].startswith("class index 7 but there are only 2 classes")



def test_a_segment_run_counts_every_skipped_pair(tmp_path, invoke):
    """Pairs left out while matching (no mask, wrong size, class out of range) and while
    decoding (a broken image) add up in the start table's skipped total and its warning."""
    import json

    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    good = (rng.random((12, 10)) > 0.5).astype(np.uint8)
    for i in range(6):
        _pair(tmp_path, "train", f"ok{i}", image, good)
        _pair(tmp_path, "val", f"v{i}", image, good)
    _pair(tmp_path, "train", "nomask", image, None)
    _pair(tmp_path, "train", "small", image, good[:6])
    _pair(tmp_path, "train", "toohigh", image, good * 7)
    _pair(tmp_path, "train", "broken", image, good)
    (tmp_path / "train" / "images" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    args = ("finetune", "--task", "segment", "--data", tmp_path, "--model", "test_resnet",
            "--no-pretrained", "--img-size", "16", "--batch-size", "4", "--workers", "0",
            "--epochs", "1")
    result = invoke(*args, "--out", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    start = json.loads(result.stdout)["start"]
    assert (start["skipped"], start["train_images"], start["val_images"]) == (4, 6, 6)
    assert [w for w in start["warnings"] if w.startswith("skipped 4 image/mask pair(s), e.g. ")]

def test_classes_are_numbered_without_classes_txt_and_a_split_is_drawn(tmp_path):
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    for i in range(10):
        _pair(tmp_path, "train", f"{i}", image, np.full((8, 8), i % 4))
    splits = load_segment_splits(data=tmp_path, val_split=0.3, seed=0)
    assert splits.classes == ["background", "class 1", "class 2", "class 3"]
    assert (len(splits.train), len(splits.val)) == (7, 3)
    with pytest.raises(ToolboxError, match="no images/ and masks/"):
        load_segment_splits(data=tmp_path / "train" / "images", val_split=0.3, seed=0)


@pytest.mark.parametrize("decoder", list(DECODERS))
@pytest.mark.parametrize("classes", [2, 5])
def test_segmenters_give_logits_at_input_resolution(decoder, classes):
    torch.manual_seed(0)
    model = create_segmenter("test_resnet", num_classes=classes, decoder=decoder).eval()
    out = model(torch.randn(2, 3, 40, 56))
    assert out.shape == (2, classes, 40, 56)
    if classes == 2:  # one logit, returned as [0, x]
        assert out[:, 0].abs().max().item() == 0.0


def test_segmenter_refuses_what_it_cannot_build():
    with pytest.raises(ToolboxError, match="only timm models"):
        create_segmenter("tv:resnet18", num_classes=2)
    with pytest.raises(ToolboxError) as err:
        create_segmenter("test_resnet", num_classes=2, decoder="fnp")
    assert "fpn" in err.value.hint or "fpn" in err.value.message


def test_palette_png_keeps_the_class_values_and_overlays_colour_only_objects(tmp_path):
    mask = np.array([[0, 1, 2], [3, 255, 1]], dtype=np.uint8)
    path = write_palette_png(tmp_path / "m.png", mask)
    assert np.array_equal(read_mask(path), mask)
    colours = colorize(mask)
    assert colours[0, 0].tolist() == [0, 0, 0] and colours[1, 1].tolist() == [255, 255, 255]
    assert len({tuple(c) for c in colours.reshape(-1, 3)}) == 5
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    shown = overlay(image, mask)
    assert shown[0, 0].tolist() == [100, 100, 100] and shown[0, 1].tolist() != [100, 100, 100]


def test_pretrained_encoder_takes_the_classifiers_packaged_weights():
    from toolbox.models import create_model

    model = create_segmenter("tf_efficientnet_lite0", num_classes=3, pretrained=True)
    full = create_model("tf_efficientnet_lite0", pretrained=True)  # the offline package
    encoder = model.encoder.state_dict()
    assert torch.equal(encoder["conv_stem.weight"], full.state_dict()["conv_stem.weight"])
    last = next(k for k in encoder if k.startswith("blocks.6"))
    assert torch.equal(encoder[last], full.state_dict()[last])
