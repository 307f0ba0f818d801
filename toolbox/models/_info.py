"""Facts about one architecture: size, preprocessing, head, licence, paper and pretrained tags."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toolbox.models._factory import (
    classifier_name,
    create_model,
    resolve_model,
    timm_weights_source,
    torchvision_weights_source,
)
from toolbox.models._registry import (
    build_without_weights,
    parameter_count,
    torchvision_defaults,
)

_ARXIV = re.compile(r"arxiv[:.](?:org/abs/)?(\d{4}\.\d{4,5})", re.IGNORECASE)
_TV_PAPER = re.compile(r"`([^`<]+?)\s*<(https?://[^>]+)>`_")


@dataclass
class ModelInfo:
    """What `tb models info` shows."""

    name: str  # as given, canonical spelling (`resnet50.a1_in1k`, `tv:resnet18`)
    architecture: str
    source: str
    params: int | None
    input_size: list[int] | None
    mean: list[float] | None
    std: list[float] | None
    interpolation: str | None
    crop_pct: float | None
    num_classes: int | None
    classifier: str | None
    license: str | None
    hub_id: str | None
    url: str | None
    paper: str | None
    pretrained_tag: str | None  # the tag these preprocessing facts belong to
    pretrained_tags: list[str] = field(default_factory=list)
    # Where `pretrained_tag`'s weights would come from: hub-cache, package or download.
    weights_source: str | None = None


def _paper_from_ids(ids: str | None, name: str | None) -> str | None:
    links = [f"https://arxiv.org/abs/{m}" for m in _ARXIV.findall(ids or "")]
    parts = [p for p in (name, ", ".join(links) or ids) if p]
    return " ".join(parts) or None


def _timm_info(name: str, arch: str, tag: str | None) -> ModelInfo:
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(f"{arch}.{tag}" if tag else arch)
    model = build_without_weights(lambda: create_model(arch))
    tags = timm.list_pretrained(f"{arch}.*")
    has_weights = bool(cfg and (cfg.hf_hub_id or cfg.url))
    return ModelInfo(
        name=name,
        architecture=arch,
        source="timm",
        params=None if model is None else parameter_count(model),
        input_size=list(cfg.input_size) if cfg and cfg.input_size else None,
        mean=list(cfg.mean) if cfg else None,
        std=list(cfg.std) if cfg else None,
        interpolation=cfg.interpolation if cfg else None,
        crop_pct=cfg.crop_pct if cfg else None,
        num_classes=cfg.num_classes if cfg else None,
        classifier=(cfg.classifier if cfg and cfg.classifier else
                    classifier_name(model) if model is not None else None),
        license=cfg.license if cfg else None,
        hub_id=cfg.hf_hub_id if cfg else None,
        url=(cfg.url or cfg.origin_url) if cfg else None,
        paper=_paper_from_ids(cfg.paper_ids, cfg.paper_name) if cfg else None,
        pretrained_tag=cfg.tag if has_weights else None,
        pretrained_tags=list(tags),
        weights_source=timm_weights_source(f"{arch}.{cfg.tag}") if has_weights else None,
    )


def _tv_info(name: str, arch: str) -> ModelInfo:
    import torchvision.models as tvm

    facts = torchvision_defaults(arch)
    model = build_without_weights(lambda: create_model(name))
    doc = tvm.get_model_builder(arch).__doc__ or ""
    paper = _TV_PAPER.search(doc)
    return ModelInfo(
        name=name,
        architecture=arch,
        source="torchvision",
        params=(int(facts["num_params"]) if facts.get("num_params") else
                None if model is None else parameter_count(model)),
        input_size=list(facts["input_size"]),
        mean=list(facts["mean"]) if "mean" in facts else None,
        std=list(facts["std"]) if "std" in facts else None,
        interpolation=facts.get("interpolation"),
        crop_pct=facts.get("crop_pct"),
        num_classes=facts.get("num_classes"),
        classifier=None if model is None else classifier_name(model),
        # timm labels the very same torchvision weights bsd-3-clause (e.g. resnet50.tv_in1k).
        license="bsd-3-clause",
        hub_id=None,
        url=facts.get("url"),
        paper=f"{paper.group(1).strip()} {paper.group(2)}" if paper else None,
        pretrained_tag=facts.get("default_weights"),
        weights_source=(torchvision_weights_source(facts["default_weights"])
                        if facts.get("default_weights") else None),
        pretrained_tags=list(facts.get("weights", [])),
    )


def model_info(name: str) -> ModelInfo:
    """Facts about the timm or torchvision architecture `name` (weights are never downloaded).

    Raises:
        ToolboxError: unknown name or pretrained tag (with close matches).
    """
    ref = resolve_model(name)
    if ref.source == "timm":
        full = f"{ref.arch}.{ref.tag}" if ref.tag else ref.arch
        return _timm_info(full, ref.arch, ref.tag)
    return _tv_info(ref.name, ref.arch)
