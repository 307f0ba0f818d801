"""Segmentation models: a timm `features_only` encoder with a light FPN or U-Net decoder.

The model returns per-pixel class logits at the input resolution. With one foreground class
(two classes counting the background) the decoder predicts a single logit `x` per pixel and the
model returns `[0, x]`: softmax over those two is `sigmoid(x)`, so cross-entropy, argmax and
softmax work unchanged while the binary Dice loss can apply the sigmoid to `x` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolbox.errors import ToolboxError, UsageError, unknown_name

if TYPE_CHECKING:
    import torch
    from torch import nn

DECODERS = {
    "fpn": "feature pyramid: every level to 64 channels, top-down sums, merged at stride 4",
    "unet": "U-Net: upsample, concatenate the skip feature, two 3x3 convolutions, per level",
}
ENCODER = "encoder"
DECODER = "decoder"  # the part `--freeze` keeps training (the segmentation "head")
FPN_CHANNELS = 64
# The FPN leaves out encoder levels finer than this (the stride-2 stem of most CNNs): its 3x3
# smoothing at stride 2 cost as much as the whole tf_efficientnet_lite0 encoder at 96 px, and
# a step of fwd+bwd on the CPU took about a third less without it.
FPN_MIN_REDUCTION = 4


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Module:
    from torch import nn

    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _build_decoders() -> dict[str, type]:
    """The decoder classes (defined on first use: torch is not imported at module load)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FPNDecoder(nn.Module):
        """Lateral 1x1 convolutions, a top-down pathway, and every level upsampled to the
        finest one and summed (the semantic branch of Panoptic FPN, kept small)."""

        def __init__(self, channels: list[int], out_channels: int) -> None:
            super().__init__()
            width = FPN_CHANNELS
            self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
            self.smooth = nn.ModuleList(_conv_bn_relu(width, width) for _ in channels)
            self.classifier = nn.Conv2d(width, out_channels, 1)

        def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
            laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
            for i in range(len(laterals) - 1, 0, -1):
                laterals[i - 1] = laterals[i - 1] + F.interpolate(
                    laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            size = laterals[0].shape[-2:]
            merged = sum(F.interpolate(conv(x), size=size, mode="bilinear", align_corners=False)
                         for conv, x in zip(self.smooth, laterals, strict=True))
            return self.classifier(merged)

    class UNetDecoder(nn.Module):
        """From the deepest feature up: upsample, concatenate the skip, two convolutions."""

        def __init__(self, channels: list[int], out_channels: int) -> None:
            super().__init__()
            blocks = []
            deep = channels[-1]
            for skip in reversed(channels[:-1]):
                width = max(skip, 16)
                blocks.append(nn.Sequential(_conv_bn_relu(deep + skip, width),
                                            _conv_bn_relu(width, width)))
                deep = width
            self.blocks = nn.ModuleList(blocks)
            self.classifier = nn.Conv2d(deep, out_channels, 1)

        def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
            x = features[-1]
            for block, skip in zip(self.blocks, reversed(features[:-1]), strict=True):
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                x = block(torch.cat([x, skip], dim=1))
            return self.classifier(x)

    return {"fpn": FPNDecoder, "unet": UNetDecoder}


def _load_classifier_weights(encoder: nn.Module, name: str, kwargs: dict) -> None:
    """Give the encoder the pretrained weights of the classifier `name`, found wherever
    classification finds them (hub cache, packaged weights): the classifier is built with them
    and its tensors are copied over by name (features_only models keep the backbone's names, or
    flatten the first dot: `stages.0.x` -> `stages_0.x`).

    Raises:
        PretrainedWeightsUnavailable: as `create_model` does.
        ToolboxError: an encoder tensor with no counterpart in the classifier.
    """
    from toolbox.models._factory import create_model

    state = create_model(name, pretrained=True, **kwargs).state_dict()
    picked, missing = {}, []
    for key, tensor in encoder.state_dict().items():
        head, _, rest = key.partition(".")
        for candidate in (key, f"{head.replace('_', '.', 1)}.{rest}" if rest else key):
            if candidate in state and state[candidate].shape == tensor.shape:
                picked[key] = state[candidate]
                break
        else:
            missing.append(key)
    if missing:
        raise ToolboxError(f"the pretrained weights of {name} do not fit its features_only "
                           f"encoder ({len(missing)} tensors, e.g. {missing[0]})",
                           "pass --no-pretrained")
    encoder.load_state_dict(picked)


def output_channels(num_classes: int) -> int:
    """Logit maps the decoder predicts: one for background + one foreground class."""
    return 1 if num_classes == 2 else num_classes


def create_segmenter(name: str, *, num_classes: int, decoder: str = "fpn",
                     pretrained: bool = False, **kwargs: object) -> nn.Module:
    """An encoder-decoder segmentation model over timm architecture `name`.

    Raises:
        PretrainedWeightsUnavailable: `pretrained` but the weights cannot be loaded (offline).
        ToolboxError: unknown decoder, fewer than two classes, or an encoder without
            `features_only` support (torchvision models, most ViTs).
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    from toolbox.models._factory import create_model, resolve_model

    if decoder not in DECODERS:
        raise unknown_name("decoder", decoder, DECODERS, f"choose one of {', '.join(DECODERS)}")
    if num_classes < 2:
        raise ToolboxError(f"segmentation needs at least two classes (background and one "
                           f"more), got {num_classes}")
    ref = resolve_model(name)
    if ref.source != "timm":
        raise UsageError(f"{ref.name} cannot be a segmentation encoder: only timm models "
                           "give multi-scale features", "pick a timm model, e.g. resnet18")
    try:
        encoder = create_model(name, features_only=True, **kwargs)
    except (RuntimeError, AttributeError, NotImplementedError, AssertionError) as exc:
        raise UsageError(f"{ref.name} does not support features_only, so it cannot be a "
                         f"segmentation encoder ({str(exc).splitlines()[0]})",
                         "pick a CNN such as resnet18 or tf_efficientnet_lite0") from exc
    if pretrained:
        _load_classifier_weights(encoder, name, kwargs)
    channels = list(encoder.feature_info.channels())
    reductions = list(encoder.feature_info.reduction())
    # Levels the decoder reads: all for the U-Net, stride 4 and coarser for the FPN.
    first = 0
    if decoder == "fpn":
        first = next((i for i, r in enumerate(reductions) if r >= FPN_MIN_REDUCTION), 0)
    out = output_channels(num_classes)
    head = _build_decoders()[decoder](channels[first:], out)

    class Segmenter(nn.Module):
        """Encoder features -> decoder logits, resized to the input (see the module note)."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.decoder = head
            self.pretrained_cfg = getattr(encoder, "pretrained_cfg", {})

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.decoder(self.encoder(x)[first:])
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear",
                                   align_corners=False)
            if out == 1:
                logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
            return logits

    return Segmenter()
