"""Building models by name from timm or torchvision, and giving them a new classifier head.

Names: timm names (optionally with a pretrained tag, `resnet50.a1_in1k`), torchvision names
prefixed `tv:` (`tv:resnet18`), or plain names that only torchvision has (`alexnet`).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from toolbox.errors import ToolboxError, unknown_name
from toolbox.models._packaged import load_packaged, package_file, packaged_weights
from toolbox.models._registry import TV_PREFIX, known_names, torchvision_classification_models

if TYPE_CHECKING:
    from torch import nn

# Where pretrained weights come from, in the order they are tried (`tb models list/info`).
WeightsSource = Literal["hub-cache", "package", "download"]


@dataclass(frozen=True)
class ModelRef:
    """A resolved model name: where it comes from and its canonical spelling."""

    name: str  # the name as `tb models list` shows it (`resnet50`, `tv:alexnet`)
    source: Literal["timm", "torchvision"]
    arch: str  # the name the library's own factory takes
    tag: str | None = None  # timm pretrained tag, if one was given


class PretrainedWeightsUnavailable(ToolboxError):
    """Pretrained weights were asked for but cannot be had (offline and not cached)."""


def resolve_model(name: str) -> ModelRef:
    """Resolve a user-given model name, or raise a ToolboxError with close matches."""
    import timm

    if name.startswith(TV_PREFIX):
        arch = name[len(TV_PREFIX):]
        tv_names = torchvision_classification_models()
        if arch not in tv_names:
            raise unknown_name("torchvision model", name, [TV_PREFIX + n for n in tv_names],
                               "see `tb models list --source torchvision`")
        return ModelRef(name, "torchvision", arch)
    if timm.is_model(name):
        arch, _, tag = name.partition(".")
        if tag:
            # timm.is_model ignores the tag; an unknown one would fail later, less clearly.
            from timm.models import get_arch_pretrained_cfgs

            tags = list(get_arch_pretrained_cfgs(arch))  # full names: resnet50.a1_in1k
            if name not in tags:
                raise unknown_name("pretrained tag", name, tags,
                                   f"see `tb models list --pretrained --filter {arch}.`")
        return ModelRef(arch, "timm", arch, tag or None)
    if name in torchvision_classification_models():
        return ModelRef(TV_PREFIX + name, "torchvision", name)
    # The same names `tb models list` shows (read from its cached index).
    raise unknown_name("model", name, known_names(), "see `tb models list --filter WORD`")


def create_model(name: str, *, num_classes: int | None = None, pretrained: bool = False,
                 **kwargs: object) -> nn.Module:
    """Create `name` with an optional new head of `num_classes` outputs.

    Raises:
        PretrainedWeightsUnavailable: `pretrained` but the weights cannot be loaded (offline).
        ToolboxError: unknown name or arguments the architecture does not take.
    """
    ref = resolve_model(name)
    try:
        if ref.source == "timm":
            model = _create_timm(ref, pretrained, num_classes, kwargs)
        else:
            model = _create_torchvision(ref, pretrained, num_classes, kwargs)
    # Arguments of the wrong name, type or value (`in_chans=-1` fails inside torch).
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ToolboxError(f"cannot build {ref.name}: {first}",
                           "check the --model-arg names and values the architecture takes"
                           ) from exc
    return model


def offline_requested() -> bool:
    """True when the user said the hub is off limits (`HF_HUB_OFFLINE=1` or `TB_OFFLINE=1`)."""
    return any(os.environ.get(var, "") not in ("", "0") for var in ("HF_HUB_OFFLINE", "TB_OFFLINE"))


def host_reachable(host: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to `host`:443 opens within `timeout` seconds.

    Asked before a download that is not cached: the hub clients retry for tens of seconds on
    a machine without network, which is a long silent wait for an answer known in milliseconds.
    """
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable(name: str, why: str) -> PretrainedWeightsUnavailable:
    return PretrainedWeightsUnavailable(
        f"pretrained weights for {name} are not available: {why}",
        "connect to the hub once to cache them, or pass --weights FILE")


def hub_cached_file(hub_id: str, filename: str | None = None) -> str | None:
    """Local path of a hub repository's weights file in the Hugging Face cache, if it is there."""
    from huggingface_hub import try_to_load_from_cache

    for name in filter(None, (filename, "model.safetensors", "pytorch_model.bin")):
        found = try_to_load_from_cache(hub_id, name)
        if isinstance(found, str):
            return found
    return None


def _cached_timm_weights(name: str) -> str | None:
    """Local path of `name`'s pretrained weights in the Hugging Face cache, if they are there."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    return hub_cached_file(cfg.hf_hub_id, cfg.hf_hub_filename)


def timm_weights_source(name: str) -> WeightsSource:
    """Where `create_model(name, pretrained=True)` takes timm weights from (`arch` or
    `arch.tag`), in the order it tries them."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id and hub_cached_file(cfg.hf_hub_id, cfg.hf_hub_filename):
        return "hub-cache"
    entry = packaged_weights(name)
    if entry is not None and package_file(entry) is not None:
        return "package"
    return "download"


def torchvision_weights_source(weights_name: str) -> WeightsSource:
    """Where torchvision weights (`ResNet18_Weights.IMAGENET1K_V1`) would come from."""
    import torchvision.models as tvm

    url = str(tvm.get_weight(weights_name).url)
    return "hub-cache" if _torchvision_file_cached(url) else "download"


def _create_timm(ref: ModelRef, pretrained: bool, num_classes: int | None,
                 kwargs: dict) -> nn.Module:
    import timm

    name = f"{ref.arch}.{ref.tag}" if ref.tag else ref.arch
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    if pretrained:
        cached = _cached_timm_weights(name)
        packaged = packaged_weights(name)
        package_path = package_file(packaged) if packaged is not None else None
        if cached:  # load the cached file directly: no hub round trip, works offline
            kwargs = {**kwargs, "pretrained_cfg_overlay": {"file": cached}}
        elif packaged is not None and package_path is not None:
            model = timm.create_model(name, **kwargs)
            load_packaged(model, packaged, package_path)
            return model
        elif offline_requested():
            raise _unavailable(name, "not cached, and HF_HUB_OFFLINE/TB_OFFLINE is set")
        elif not host_reachable("huggingface.co"):
            raise _unavailable(name, "not cached, and huggingface.co cannot be reached")
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if not pretrained:
            raise
        raise _unavailable(name, str(exc).splitlines()[0]) from exc


def _torchvision_file_cached(url: str) -> bool:
    import torch

    filename = url.rsplit("/", 1)[-1]
    return bool(filename) and (Path(torch.hub.get_dir()) / "checkpoints" / filename).is_file()


def _create_torchvision(ref: ModelRef, pretrained: bool, num_classes: int | None,
                        kwargs: dict) -> nn.Module:
    import torchvision.models as tvm

    if not pretrained:
        if num_classes is not None:
            kwargs = {**kwargs, "num_classes": num_classes}
        return tvm.get_model(ref.arch, weights=None, **kwargs)
    weights = tvm.get_model_weights(ref.arch).DEFAULT
    if not _torchvision_file_cached(str(getattr(weights, "url", ""))):
        if offline_requested():
            raise _unavailable(ref.name, "not cached, and HF_HUB_OFFLINE/TB_OFFLINE is set")
        if not host_reachable("download.pytorch.org"):
            raise _unavailable(ref.name, "not cached, and download.pytorch.org cannot be reached")
    try:
        model = tvm.get_model(ref.arch, weights=weights, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        raise _unavailable(ref.name, str(exc).splitlines()[0]) from exc
    if num_classes is not None:
        replace_classifier(model, num_classes)
    return model


def classifier_name(model: nn.Module) -> str:
    """Dotted name of the final classification layer (timm's `get_classifier`, else last Linear)."""
    from torch import nn

    if hasattr(model, "pretrained_cfg") and model.pretrained_cfg.get("classifier"):
        return model.pretrained_cfg["classifier"]
    last = None
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = mod_name
    if last is None:
        raise ToolboxError(f"cannot find the classifier layer of {type(model).__name__}",
                           "its head is not a Linear layer; use a timm architecture")
    return last


def replace_classifier(model: nn.Module, num_classes: int) -> str:
    """Give `model` a fresh classifier with `num_classes` outputs; return the layer's name."""
    from torch import nn

    if hasattr(model, "reset_classifier"):  # timm
        model.reset_classifier(num_classes)
        return classifier_name(model)
    name = classifier_name(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return name
