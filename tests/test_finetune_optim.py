"""The optimizers `tb finetune` builds: fused kernels where torch has them, the same updates as
torch's loop implementation, and checkpoints from either kind load into the other."""

from __future__ import annotations

import copy

import pytest
import torch

from toolbox.train.optim import OPTIMIZERS, build_optimizer, fused_ok, param_groups


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _train(optimizer: torch.optim.Optimizer, model: torch.nn.Module, steps: int = 3) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 6, generator=generator)
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _loop_optimizer(model: torch.nn.Module, opt: str) -> torch.optim.Optimizer:
    """What `build_optimizer` makes, with torch's per-parameter loop instead of fused kernels."""
    groups = param_groups(model, "2", lr=0.01, weight_decay=0.05)
    return OPTIMIZERS[opt].build(groups, lr=0.01, momentum=0.9, fused=False)


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_fused_on_the_cpu_and_same_updates_as_the_loop(opt):
    fused_model, loop_model = _model(), _model()
    fused = build_optimizer(fused_model, "2", opt=opt, lr=0.01, weight_decay=0.05)
    assert all(group["fused"] for group in fused.param_groups)
    _train(fused, fused_model)
    _train(_loop_optimizer(loop_model, opt), loop_model)
    for a, b in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_the_loop_kind_resumes_fused():
    """Checkpoints written before the optimizers were fused still resume."""
    saved_model, model = _model(), _model()
    saved = _loop_optimizer(saved_model, "adamw")
    _train(saved, saved_model)
    model.load_state_dict(saved_model.state_dict())
    resumed = build_optimizer(model, "2", opt="adamw", lr=0.01, weight_decay=0.05)
    resumed.load_state_dict(copy.deepcopy(saved.state_dict()))  # as torch.load gives it
    _train(resumed, model)
    _train(saved, saved_model)
    for a, b in zip(model.parameters(), saved_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_not_fused_where_torch_has_no_kernel():
    assert fused_ok(_model()) is True
    assert fused_ok(torch.nn.Sequential()) is None
    assert fused_ok(torch.nn.Linear(2, 2, device="meta")) is None
