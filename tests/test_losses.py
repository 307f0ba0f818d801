"""The `--loss` choices against values and gradients worked out by hand (plain `math`)."""

from __future__ import annotations

import math

import pytest
import torch

from toolbox.errors import ToolboxError
from toolbox.losses import (
    LOSSES,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    build_loss,
)

LOGITS = [2.0, 1.0, 0.0]


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _run(loss_fn, logits, targets):
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    loss = loss_fn(x, torch.tensor(targets))
    loss.backward()
    return loss.item(), x.grad.tolist()


def test_cross_entropy_with_label_smoothing_value_and_gradient():
    p = _softmax(LOGITS)
    eps, c = 0.1, 3
    q = [(1 - eps) * (j == 0) + eps / c for j in range(c)]  # smoothed target of class 0
    expected = -sum(qj * math.log(pj) for qj, pj in zip(q, p, strict=True))
    value, grad = _run(CrossEntropyLoss(label_smoothing=eps), [LOGITS], [0])
    assert value == pytest.approx(expected, abs=1e-9)
    assert value == pytest.approx(0.507606, abs=1e-6)
    assert grad[0] == pytest.approx([pj - qj for pj, qj in zip(p, q, strict=True)], abs=1e-9)


def test_focal_loss_value_and_gradient():
    gamma = 2.0
    p = _softmax(LOGITS)
    pt = p[0]
    expected = -((1 - pt) ** gamma) * math.log(pt)
    d_pt = gamma * (1 - pt) ** (gamma - 1) * math.log(pt) - (1 - pt) ** gamma / pt
    expected_grad = [d_pt * pt * ((j == 0) - p[j]) for j in range(3)]
    value, grad = _run(FocalLoss(gamma=gamma), [LOGITS], [0])
    assert value == pytest.approx(expected, abs=1e-7)
    assert value == pytest.approx(0.045678, abs=1e-6)
    assert grad[0] == pytest.approx(expected_grad, abs=1e-7)


def test_focal_with_gamma_zero_is_cross_entropy():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    assert FocalLoss(gamma=0.0)(logits, targets).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, targets).item(), abs=1e-6)


def test_bce_multilabel_style_value_and_gradient():
    logits = [2.0, -1.0]
    # Integer target 0 becomes the one-hot [1, 0]; the mean runs over both logits.
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    value, grad = _run(BCEWithLogitsLoss(), [logits], [0])
    assert value == pytest.approx(expected, abs=1e-9)
    assert value == pytest.approx(0.220095, abs=1e-6)
    assert grad[0] == pytest.approx([(_sigmoid(2.0) - 1) / 2, _sigmoid(-1.0) / 2], abs=1e-9)


def test_bce_takes_float_multilabel_targets():
    logits = torch.tensor([[0.0, 0.0]])
    value = BCEWithLogitsLoss()(logits, torch.tensor([[1.0, 1.0]])).item()
    assert value == pytest.approx(math.log(2), abs=1e-7)


def _dice_by_hand(rows: list[list[float]], targets: list[int], smooth: float = 1.0):
    """Value and d(loss)/d(logits) of `1 - (2I + s)/(|X| + |Y| + s)` worked out row by row."""
    probs = [_softmax(r) for r in rows]
    onehot = [[float(j == t) for j in range(len(r))] for r, t in zip(rows, targets, strict=True)]
    inter = sum(p * y for pr, yr in zip(probs, onehot, strict=True)
                for p, y in zip(pr, yr, strict=True))
    denom = sum(map(sum, probs)) + sum(map(sum, onehot)) + smooth
    value = 1 - (2 * inter + smooth) / denom
    grads = []
    for pr, yr in zip(probs, onehot, strict=True):
        d_p = [-(2 * y * denom - (2 * inter + smooth)) / denom ** 2 for y in yr]
        grads.append([sum(d_p[j] * pr[j] * ((j == k) - pr[k]) for j in range(len(pr)))
                      for k in range(len(pr))])
    return value, grads


def test_dice_classification_value_and_gradient():
    rows, targets = [LOGITS, [0.0, 0.0, 0.0]], [0, 2]
    expected, expected_grad = _dice_by_hand(rows, targets)
    assert expected == pytest.approx(1 - (2 * (_softmax(LOGITS)[0] + 1 / 3) + 1) / 5)
    value, grad = _run(DiceLoss(), rows, targets)
    assert value == pytest.approx(expected, abs=1e-9)
    assert value == pytest.approx(0.400571, abs=1e-6)
    for got, want in zip(grad, expected_grad, strict=True):
        assert got == pytest.approx(want, abs=1e-9)


def test_dice_segmentation_matches_the_per_pixel_formula():
    # (N=1, C=2, H=1, W=2) logits and (1, 1, 2) integer masks.
    pixels, targets = [[1.0, -1.0], [0.5, 2.0]], [0, 1]
    logits = [[[[pixels[0][0], pixels[1][0]]], [[pixels[0][1], pixels[1][1]]]]]
    expected, expected_grad = _dice_by_hand(pixels, targets)
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    loss = DiceLoss()(x, torch.tensor([[targets]]))
    loss.backward()
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    got = x.grad[0, :, 0, :].T.tolist()  # back to per-pixel rows
    for row, want in zip(got, expected_grad, strict=True):
        assert row == pytest.approx(want, abs=1e-9)


def test_dice_is_zero_for_confident_correct_predictions():
    logits = torch.tensor([[50.0, -50.0], [-50.0, 50.0]])
    assert DiceLoss()(logits, torch.tensor([0, 1])).item() == pytest.approx(0.0, abs=1e-6)


def test_registry_builds_every_loss_and_rejects_bad_names():
    logits = torch.randn(4, 3, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 1])
    for name in LOSSES:
        loss = build_loss(name)(logits, targets)
        assert loss.ndim == 0 and math.isfinite(loss.item())
    with pytest.raises(ToolboxError, match="unknown loss 'foca'") as err:
        build_loss("foca")
    assert "focal" in err.value.hint
    with pytest.raises(ToolboxError, match="label-smoothing"):
        build_loss("dice", label_smoothing=0.1)
