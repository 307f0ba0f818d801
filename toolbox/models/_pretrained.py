"""What a model expects and knows from pretraining: its preprocessing and its ImageNet classes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolbox.errors import ToolboxError
from toolbox.models._checkpoint import IMAGENET_MEAN, IMAGENET_STD, ModelMeta
from toolbox.models._factory import classifier_name, create_model, resolve_model

if TYPE_CHECKING:
    from torch import nn


def data_config(model: nn.Module, img_size: int | None) -> dict[str, Any]:
    """timm's pretrained data config (input size, mean, std, interpolation, crop), with defaults
    for torchvision models and `img_size` overriding the size (and then not cropping)."""
    config: dict[str, Any] = {"input_size": (3, 224, 224), "interpolation": "bilinear",
                              "crop_pct": 0.875, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    if hasattr(model, "pretrained_cfg"):
        from timm.data import resolve_model_data_config

        resolved = resolve_model_data_config(model)
        config.update({k: resolved[k] for k in config if k in resolved})
    if img_size is not None:
        config["input_size"] = (config["input_size"][0], img_size, img_size)
        config["crop_pct"] = 1.0
    return config


def _class_names(model: nn.Module, name: str, arch: str, source: str) -> list[str]:
    """The pretrained head's class names: timm's ImageNetInfo, or torchvision's categories."""
    if source == "torchvision":
        import torchvision.models as tvm

        return list(tvm.get_model_weights(arch).DEFAULT.meta.get("categories") or [])
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if subset is None:
        raise ToolboxError(f"{name} was not pretrained on an ImageNet label set tb can name",
                           "fine-tune it on your classes with `tb finetune`, then predict "
                           "with --run")
    info = ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(info.num_classes())]


def pretrained_classifier(name: str) -> tuple[nn.Module, ModelMeta]:
    """`name` with its pretrained weights and head, in eval mode, and how to feed it.

    Raises:
        PretrainedWeightsUnavailable: no cached, packaged or downloadable weights.
        ToolboxError: unknown name, or a head whose classes cannot be named.
    """
    ref = resolve_model(name)
    model = create_model(name, pretrained=True).eval()
    names = _class_names(model, name, ref.arch, ref.source)
    if ref.source == "torchvision":
        from toolbox.models._registry import torchvision_defaults

        facts = torchvision_defaults(ref.arch)
        config = {k: facts[k] for k in ("input_size", "mean", "std", "interpolation",
                                        "crop_pct")}
    else:
        config = data_config(model, None)
    outputs = _num_outputs(model)
    if len(names) != outputs:
        raise ToolboxError(f"{name} has {outputs} outputs but {len(names)} class names are "
                           "known for it", "fine-tune it with `tb finetune`, then use --run")
    meta = ModelMeta(model=ref.name if not ref.tag else name, num_classes=outputs,
                     class_names=names, input_size=tuple(config["input_size"]),
                     mean=tuple(config["mean"]), std=tuple(config["std"]),
                     interpolation=str(config["interpolation"]),
                     crop_pct=float(config["crop_pct"]))
    return model, meta


def _num_outputs(model: nn.Module) -> int:
    import torch

    head = model.get_submodule(classifier_name(model))
    if isinstance(head, torch.nn.Linear):
        return head.out_features
    return int(getattr(model, "num_classes", 0))
