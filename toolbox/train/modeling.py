"""The model side of fine-tuning: build, load weights, new head, freeze, preprocessing config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from toolbox.errors import ToolboxError
from toolbox.models import (
    ModelMeta,
    PretrainedWeightsUnavailable,
    absolute_spec,
    classifier_name,
    create_model,
    data_config,
    is_code_spec,
    load_state_dict,
    load_user_model,
    read_meta,
    resolve_model,
)

_BATCHNORMS = (nn.modules.batchnorm._BatchNorm,)
# Measured on the demo digits (5 epochs, the defaults): a frozen random tf_efficientnet_lite0
# reaches about 76%, the frozen pretrained one about 91%.
FROZEN_RANDOM_WARNING = (
    "--freeze with a random backbone ({why}): only the head learns, on untrained features "
    "(expect far lower accuracy than with pretrained weights, e.g. 76% instead of 91% on the "
    "demo digits); pass --weights FILE with trained weights, or train without --freeze")


@dataclass
class TrainableModel:
    """A model ready to train, with its head's name, its ModelMeta and what happened on the way."""

    model: nn.Module
    head: str
    meta: ModelMeta
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    weights_source: str = "random"


def _create(name: str, num_classes: int, pretrained: bool, kwargs: dict) -> tuple[nn.Module, str]:
    """Create the model; (model, "pretrained"|"random")."""
    if pretrained:
        return create_model(name, num_classes=num_classes, pretrained=True, **kwargs), "pretrained"
    return create_model(name, num_classes=num_classes, **kwargs), "random"


def _build_user(spec: str, num_classes: int, seed: int) -> tuple[nn.Module, str, list[str]]:
    """A model from user code; its spec with an absolute file path is what the run records."""
    spec = absolute_spec(spec)
    torch.manual_seed(seed)
    net = load_user_model(spec, num_classes=num_classes)
    return net, spec, [f"model from your code: {spec} (its own initialisation; pretrained "
                       "weights only if it loads them, or pass --weights)"]


def build_model(*, model: str, class_names: list[str], pretrained: bool, weights: str | None,
                img_size: int | None, seed: int, freeze: bool = False) -> TrainableModel:
    """Build `model` with a head for `class_names`, from hub weights, a file, or random init.

    `model` is a timm/torchvision name or user code (`file.py:Class`, `pkg.module:Factory`),
    which gets `num_classes` when it takes it and a new last Linear layer otherwise. With
    `freeze` and random weights, a warning says what to expect: only the head learns, on
    features nobody trained.

    Raises:
        ToolboxError: unknown model, unreadable weights, or weights of another architecture.
    """
    num_classes = len(class_names)
    warnings: list[str] = []
    notes: list[str] = []
    kwargs: dict = {}
    unavailable = None
    if is_code_spec(model):
        net, name, notes = _build_user(model, num_classes, seed)
        return _finish(net, name, class_names, weights, img_size, kwargs, notes,
                       warnings, "random", freeze, unavailable)
    ref = resolve_model(model)
    torch.manual_seed(seed)  # the same random init (and new head) for the same seed
    want_hub = pretrained and weights is None
    try:
        net, source = _create(ref.name if not ref.tag else model, num_classes, want_hub, kwargs)
    except PretrainedWeightsUnavailable as exc:
        unavailable = exc.message
        if not freeze:  # else the warning below says it, with what to expect
            warnings.append(f"{exc.message}; starting from random initialisation (pass "
                            f"--weights FILE, or --no-pretrained to silence this)")
        torch.manual_seed(seed)
        net, source = create_model(ref.name, num_classes=num_classes), "random"
    if img_size is not None and getattr(net, "pretrained_cfg", {}).get("fixed_input_size"):
        # ViT-style models bake the input size into their position embeddings.
        kwargs = {"img_size": img_size}
        torch.manual_seed(seed)
        net, source = _create(ref.name if not ref.tag else model, num_classes,
                              source == "pretrained", kwargs)
    return _finish(net, ref.name, class_names, weights, img_size, kwargs, notes,
                   warnings, source, freeze, unavailable)


def _finish(net: nn.Module, name: str, class_names: list[str], weights: str | None,
            img_size: int | None, kwargs: dict, notes: list[str],
            warnings: list[str], source: str, freeze: bool, unavailable: str | None
            ) -> TrainableModel:
    """Load `--weights`, warn about a frozen random backbone, and describe the model for its
    files (ModelMeta)."""
    head = classifier_name(net)
    if weights is not None:
        notes.extend(load_weights(net, head, Path(weights), name))
        source = f"file {weights}"
    if freeze and source == "random":
        why = unavailable or f"{name} built without pretrained weights"
        warnings.append(FROZEN_RANDOM_WARNING.format(why=why))
    cfg = data_config(net, img_size)
    meta = ModelMeta(model=name, num_classes=len(class_names), class_names=list(class_names),
                     input_size=tuple(cfg["input_size"]), mean=tuple(cfg["mean"]),
                     std=tuple(cfg["std"]), interpolation=str(cfg["interpolation"]),
                     crop_pct=float(cfg["crop_pct"]), model_kwargs=kwargs)
    return TrainableModel(net, head, meta, notes, warnings, source)


def load_weights(model: nn.Module, head: str, path: Path, model_name: str) -> list[str]:
    """Load a `.safetensors`/`.pth`/`tb` checkpoint into `model`; a head of another size is
    dropped (and reported), anything else that does not fit is an error."""
    state = load_state_dict(path)
    own = model.state_dict()
    in_head = lambda key: key.startswith(head + ".")  # noqa: E731
    notes = []
    dropped = [k for k in state if in_head(k) and k in own and state[k].shape != own[k].shape]
    if dropped:
        old = state[dropped[0]].shape[0]
        notes.append(f"dropped the {old}-class head of {path.name}; a new "
                     f"{own[dropped[0]].shape[0]}-class head is trained")
        state = {k: v for k, v in state.items() if k not in dropped}
    missing = [k for k in own if k not in state and not (dropped and in_head(k))]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        try:
            meta = read_meta(path)
        except ToolboxError:
            meta = None
        holds = f" (it holds {meta.model} weights)" if meta and meta.model != model_name else ""
        example = (mismatched or missing or unexpected)[0]
        raise ToolboxError(
            f"weights in {path} do not fit {model_name}{holds}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} mismatched tensors "
            f"(e.g. {example})",
            f"pass --model {meta.model}" if holds else "pass weights of the same architecture")
    model.load_state_dict(state, strict=False)
    notes.append(f"loaded weights from {path}")
    return notes


def is_head(name: str, head: str) -> bool:
    """Whether a parameter/module name belongs to the classifier `head`."""
    return name == head or name.startswith(head + ".")


def set_frozen(model: nn.Module, head: str, frozen: bool) -> None:
    """Freeze (or unfreeze) everything but the head."""
    for name, param in model.named_parameters():
        param.requires_grad = (not frozen) or is_head(name, head)


def frozen_batchnorms(model: nn.Module, head: str) -> list[nn.Module]:
    """BatchNorm layers outside the head whose parameters do not learn."""
    result = []
    for name, module in model.named_modules():
        if isinstance(module, _BATCHNORMS) and not is_head(name, head):
            params = list(module.parameters(recurse=False))
            if not any(p.requires_grad for p in params):
                result.append(module)
    return result


def train_mode(model: nn.Module, head: str) -> None:
    """`model.train()`, except frozen BatchNorm keeps its running statistics (eval mode)."""
    model.train()
    for module in frozen_batchnorms(model, head):
        module.eval()


def parameter_counts(model: nn.Module) -> tuple[int, int, int]:
    """(total, trainable, frozen) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable, total - trainable
