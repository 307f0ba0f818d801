"""Evaluation-time preprocessing from a ModelMeta, shared by finetune (val), predict and evaluate.

timm's recipe: resize the shorter side to `size / crop_pct`, centre-crop `size`, scale to [0, 1],
normalise with the model's mean and std.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from toolbox.models import ModelMeta

if TYPE_CHECKING:
    import numpy as np
    import torch

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


def eval_tensor(image: np.ndarray, meta: ModelMeta) -> torch.Tensor:
    """(H, W, 3) uint8 image -> normalised (C, H, W) float tensor for `meta`'s model."""
    return normalize_uint8(resize_crop_uint8(image, meta), meta)


def resize_crop_uint8(image: np.ndarray, meta: ModelMeta) -> torch.Tensor:
    """The geometric half of `eval_tensor`: (H, W, 3) uint8 -> resized, cropped (C, H, W) uint8.

    Split out so training can cache this small uint8 result and normalise whole batches later
    with `normalize_uint8`, giving exactly the values `eval_tensor` gives.
    """
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    channels, height, width = meta.input_size
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    if channels == 1:
        tensor = F.rgb_to_grayscale(tensor)
    mode = meta.interpolation if meta.interpolation in _INTERPOLATIONS else "bilinear"
    scale_size = [math.floor(height / meta.crop_pct), math.floor(width / meta.crop_pct)]
    if list(tensor.shape[-2:]) != [height, width]:
        # Square targets: shorter side to size/crop_pct (keeps the aspect ratio), then crop.
        resize_to = scale_size[0] if height == width else scale_size
        tensor = F.resize(tensor, resize_to, interpolation=InterpolationMode(mode),
                          antialias=True)
        tensor = F.center_crop(tensor, [height, width])
    return tensor.contiguous()


def normalize_uint8(tensor: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """uint8 (C, H, W) or (N, C, H, W) -> float32 scaled to [0, 1] and normalised (any device)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    tensor = F.to_dtype(tensor, torch.float32, scale=True)
    return F.normalize(tensor, list(meta.mean), list(meta.std))
