"""Pretrained weights: taken from the local hub cache without network; a fast, clear failure
when they are not cached and the hub cannot be reached."""

from __future__ import annotations

import time

import pytest
import torch

from toolbox.models import PretrainedWeightsUnavailable, _factory, create_model


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def _put_in_cache(cache, repo_id: str, state: dict) -> None:
    from safetensors.torch import save_file

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))


def test_cached_timm_weights_load_offline(hf_cache):
    torch.manual_seed(123)
    reference = create_model("resnet18").state_dict()
    _put_in_cache(hf_cache, "timm/resnet18.a1_in1k", reference)
    model = create_model("resnet18", pretrained=True, num_classes=3)  # HF_HUB_OFFLINE=1
    loaded = model.state_dict()
    assert torch.equal(loaded["conv1.weight"], reference["conv1.weight"])
    assert loaded["fc.weight"].shape == (3, 512)  # the new head, not the cached one


def test_not_cached_offline_fails_fast(hf_cache):
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailable, match="not cached"):
        create_model("resnet18", pretrained=True)
    assert time.perf_counter() - start < 1.0


def test_not_cached_unreachable_fails_fast(hf_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(_factory, "host_reachable", lambda host, timeout=2.0: False)
    with pytest.raises(PretrainedWeightsUnavailable, match=r"huggingface\.co cannot be reached"):
        create_model("resnet18", pretrained=True)
    with pytest.raises(PretrainedWeightsUnavailable, match=r"download\.pytorch\.org"):
        create_model("tv:resnet18", pretrained=True)


def test_host_reachable_refuses_quickly():
    start = time.perf_counter()
    assert not _factory.host_reachable("127.0.0.1", timeout=0.5)  # nothing serves 443 here
    assert time.perf_counter() - start < 1.0
