"""`tb models list`: the registry index, its cache, filters, and the fast warm path."""

from __future__ import annotations

import json

import pytest

from toolbox.models import _registry, list_models
from toolbox.models._registry import index_key, index_path, load_index

HEAVY = ("torch", "torchvision", "timm")


@pytest.fixture
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """A private cache dir, for tests that break or replace the index."""
    monkeypatch.setenv("TB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _names(listing) -> list[str]:
    return [row.name for row in listing.rows]


def test_filter_resnet_json_has_both_registries(invoke):
    result = invoke("models", "list", "--filter", "resnet", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    timm_rows = [r for r in rows if r["source"] == "timm"]
    tv_rows = [r for r in rows if r["source"] == "torchvision"]
    assert len(timm_rows) >= 70
    assert len(tv_rows) >= 10
    names = {r["name"] for r in rows}
    # A plain word matches the name or the family: seresnext26d_32x4d is a timm `resnet`.
    assert {"resnet50", "wide_resnet50_2", "seresnext26d_32x4d", "tv:resnet18",
            "tv:wide_resnet50_2", "tv:resnext50_32x4d"} <= names
    assert all(set(r) == {"name", "source", "input_size", "pretrained_tags", "family"}
               for r in rows)
    assert next(r for r in rows if r["name"] == "seresnext26d_32x4d")["family"] == "resnet"
    assert all(r["name"].startswith("tv:") for r in tv_rows)
    resnet50 = next(r for r in rows if r["name"] == "resnet50")
    assert resnet50["input_size"] == [3, 224, 224]
    assert "resnet50.a1_in1k" in resnet50["pretrained_tags"]
    tv18 = next(r for r in rows if r["name"] == "tv:resnet18")
    assert tv18["pretrained_tags"] == ["ResNet18_Weights.IMAGENET1K_V1"]


def test_wildcards_work_as_in_timm():
    names = _names(list_models(pattern="resnet5?"))
    assert "resnet50" in names and "tv:resnet50" in names
    assert "resnet101" not in names and "seresnet50" not in names and "resnet50d" not in names
    assert _names(list_models(pattern="vit_base_patch16_2?4", source="timm")) == [
        "vit_base_patch16_224"]


def test_pretrained_lists_tags_and_drops_untrained():
    listing = list_models(pattern="resnet18", pretrained=True)
    by_name = {row.name: row for row in listing.rows}
    assert "resnet18.a1_in1k" in by_name["resnet18"].pretrained_tags
    assert "seresnet18" not in by_name  # an architecture without weights
    assert all(row.pretrained_tags for row in listing.rows)
    tagged = list_models(pattern="resnet50.a1*", pretrained=True)
    assert [(r.name, r.pretrained_tags) for r in tagged.rows] == [
        ("resnet50", ["resnet50.a1_in1k", "resnet50.a1h_in1k"])]


def test_params_are_counted_on_meta_and_cached(invoke):
    result = invoke("models", "list", "--filter", "resnet18", "--params", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["resnet18"]["params"] == 11_689_512
    assert rows["tv:resnet18"]["params"] == 11_689_512
    assert rows["resnet18d"]["params"] == 11_708_744
    assert load_index().params["resnet18"] == 11_689_512  # written back to the index


def test_source_and_limit(invoke):
    tv = list_models(source="torchvision")
    assert tv.rows and all(r.source == "torchvision" for r in tv.rows)
    result = invoke("models", "list", "--filter", "resnet", "--limit", "3")
    assert result.exit_code == 0, result.stderr
    assert "architectures matched" in result.stdout and "showing 3 (--limit)" in result.stdout
    rows = json.loads(invoke("models", "list", "--filter", "resnet", "--limit", "3",
                             "--json").stdout)
    assert len(rows) == 3


def test_table_and_empty_result(invoke):
    result = invoke("models", "list", "--filter", "convnext_tiny", "--pretrained")
    assert result.exit_code == 0, result.stderr
    assert "tv:convnext_tiny" in result.stdout and "fb_in1k" in result.stdout
    empty = invoke("models", "list", "--filter", "no_such_model_xyz", "--json")
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []


def test_bad_source_is_a_usage_error(invoke):
    assert invoke("models", "list", "--source", "keras").exit_code == 2


def test_warm_subprocess_imports_no_torch_or_timm(tb_subprocess):
    load_index()  # warm the shared session cache the subprocess reads
    done = tb_subprocess("models", "list", "--filter", "resnet", "--json",
                         env={"PYTHONPROFILEIMPORTTIME": "1"}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert any(r["name"] == "tv:resnet18" for r in json.loads(done.stdout))
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "toolbox" in imported  # the import profile was really recorded
    assert not imported & set(HEAVY), imported & set(HEAVY)


def test_corrupt_cache_is_rebuilt(own_cache):
    path = index_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"key": {"format": 1}, "models": [["trunc')
    listing = list_models(pattern="resnet18")
    assert "resnet18" in _names(listing)
    data = json.loads(path.read_text())
    assert data["key"] == index_key()


def test_unreadable_cache_is_not_an_error(own_cache):
    index_path().mkdir(parents=True)  # a folder where the file should be: unreadable, unwritable
    assert "tv:resnet18" in _names(list_models(pattern="resnet18"))


def test_index_is_rebuilt_when_versions_change(own_cache, monkeypatch):
    load_index()
    path = index_path()
    assert json.loads(path.read_text())["key"] == index_key()

    def no_rebuild():
        raise AssertionError("a matching index must not be rebuilt")

    with monkeypatch.context() as patch:
        patch.setattr(_registry, "build_index", no_rebuild)
        load_index()

    upgraded = {**index_key(), "timm": "99.0.0"}
    monkeypatch.setattr(_registry, "index_key", lambda: upgraded)
    index = load_index()
    assert index.key == upgraded
    assert json.loads(path.read_text())["key"]["timm"] == "99.0.0"
    assert "resnet50" in {e.name for e in index.entries}
