"""Evaluation-time preprocessing from a ModelMeta, shared by finetune, predict, evaluate, export.

The geometry is the run's `resize` (`tb finetune --resize`, recorded in the model file; the
names are `toolbox.models.RESIZE_MODES`):
  crop       timm's recipe: the shorter side to `size / crop_pct`, then the centre `size` cut
             out (keeps the aspect ratio, loses the edges of non-square images);
  squash     straight to `size` (keeps everything, distorts non-square images);
  letterbox  the longer side to `size`, centred, the rest padded with black (keeps everything
             undistorted, at the price of unused pixels). Black rather than the mean colour:
             an export normalises inside its graph, so zero is the one value a user pads with
             alike for every run, and training sees the very same bands.
Then scale to [0, 1] and normalise with the model's mean and std.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from toolbox.models import ModelMeta

if TYPE_CHECKING:
    import numpy as np
    import torch

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
LETTERBOX_PAD = 0  # uint8 value of the letterbox bands, every channel


def eval_tensor(image: np.ndarray, meta: ModelMeta) -> torch.Tensor:
    """(H, W, 3) uint8 image -> normalised (C, H, W) float tensor for `meta`'s model."""
    return normalize_uint8(resize_crop_uint8(image, meta), meta)


def resize_crop_uint8(image: np.ndarray, meta: ModelMeta) -> torch.Tensor:
    """The geometric half of `eval_tensor`: (H, W, 3) uint8 -> (C, H, W) uint8 at the model's
    input size, by `meta.resize` (an image already at that size is kept as it is).

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
    if list(tensor.shape[-2:]) == [height, width]:
        return tensor.contiguous()
    mode = InterpolationMode(meta.interpolation if meta.interpolation in _INTERPOLATIONS
                             else "bilinear")
    if meta.resize == "squash":
        return F.resize(tensor, [height, width], interpolation=mode, antialias=True).contiguous()
    if meta.resize == "letterbox":
        h, w = tensor.shape[-2:]
        scale = min(height / h, width / w)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        tensor = F.resize(tensor, [new_h, new_w], interpolation=mode, antialias=True)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        return F.pad(tensor, [left, top, width - new_w - left, height - new_h - top],
                     fill=LETTERBOX_PAD).contiguous()
    scale_size = [math.floor(height / meta.crop_pct), math.floor(width / meta.crop_pct)]
    # Square targets: shorter side to size/crop_pct (keeps the aspect ratio), then crop.
    resize_to = scale_size[0] if height == width else scale_size
    tensor = F.resize(tensor, resize_to, interpolation=mode, antialias=True)
    return F.center_crop(tensor, [height, width]).contiguous()


def normalize_uint8(tensor: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """uint8 (C, H, W) or (N, C, H, W) -> float32 scaled to [0, 1] and normalised (any device)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    tensor = F.to_dtype(tensor, torch.float32, scale=True)
    return F.normalize(tensor, list(meta.mean), list(meta.std))
