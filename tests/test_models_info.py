"""`tb models info`: facts about timm and torchvision architectures, and unknown names."""

from __future__ import annotations

import json

import pytest

from toolbox.errors import ToolboxError
from toolbox.models import model_info


def test_timm_name_with_tag():
    info = model_info("resnet50.a1_in1k")
    assert (info.name, info.architecture, info.source) == ("resnet50.a1_in1k", "resnet50", "timm")
    assert info.params == 25_557_032
    assert info.input_size == [3, 224, 224]
    assert info.mean == pytest.approx([0.485, 0.456, 0.406])
    assert info.std == pytest.approx([0.229, 0.224, 0.225])
    assert (info.interpolation, info.crop_pct, info.num_classes) == ("bicubic", 0.95, 1000)
    assert (info.classifier, info.license) == ("fc", "apache-2.0")
    assert info.hub_id == "timm/resnet50.a1_in1k"
    assert info.paper == "https://arxiv.org/abs/2110.00476"
    assert info.pretrained_tag == "a1_in1k"
    assert {"resnet50.a1_in1k", "resnet50.tv_in1k"} <= set(info.pretrained_tags)


def test_other_tag_changes_the_preprocessing():
    info = model_info("resnet50.tv_in1k")
    assert (info.interpolation, info.crop_pct, info.license) == ("bilinear", 0.875,
                                                                 "bsd-3-clause")


def test_torchvision_json(invoke):
    result = invoke("models", "info", "tv:resnet18", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "tv:resnet18" and data["source"] == "torchvision"
    assert data["params"] == 11_689_512
    assert data["input_size"] == [3, 224, 224]
    assert data["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert (data["interpolation"], data["crop_pct"], data["num_classes"]) == (
        "bilinear", 0.875, 1000)
    assert data["classifier"] == "fc"
    assert "1512.03385" in data["paper"]
    assert data["pretrained_tags"] == ["ResNet18_Weights.IMAGENET1K_V1"]


def test_plain_torchvision_only_name():
    info = model_info("alexnet")  # timm has no alexnet
    assert info.name == "tv:alexnet"
    assert info.classifier == "classifier.6"
    assert info.params == 61_100_840


def test_table_output(invoke):
    result = invoke("models", "info", "resnet50.a1_in1k")
    assert result.exit_code == 0, result.stderr
    for text in ("classifier", "fc", "bicubic", "apache-2.0", "25,557,032", "3x224x224",
                 "a1h_in1k"):
        assert text in result.stdout


def test_unknown_model_suggests_close_names(invoke):
    result = invoke("models", "info", "resnet5O")
    assert result.exit_code == 2  # a bad argument value is a usage error
    assert "unknown model 'resnet5O'" in result.stderr
    assert "resnet50" in result.stderr and "Traceback" not in result.stderr


def test_unknown_tag_suggests_the_architectures_tags():
    with pytest.raises(ToolboxError) as err:
        model_info("resnet50.a1_in1kk")
    assert "resnet50.a1_in1k" in err.value.hint


def test_unknown_torchvision_name(invoke):
    result = invoke("models", "info", "tv:resnet19")
    assert result.exit_code == 2
    assert "tv:resnet18" in result.stderr
