"""The module that is exported: the run's model with its preprocessing (and softmax) inside."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from toolbox.models import ModelMeta

# ITU-R 601-2 luma, the weights torchvision's rgb_to_grayscale uses for one-channel runs.
_LUMA = (0.2989, 0.587, 0.114)


class DeployModel(nn.Module):
    """RGB float in [0, 1], NCHW -> logits (or probabilities), preprocessing included.

    The exported file must not depend on tb to be fed correctly: normalising with the run's mean
    and std (and the grayscale conversion of one-channel runs) lives in the graph, so a user only
    brings the image to the input size by the `resize` rule in the metadata and divides by 255.
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, softmax: bool = False) -> None:
        super().__init__()
        self.model = model
        self.softmax = softmax
        self.gray = meta.input_size[0] == 1
        mean, std = torch.tensor(meta.mean), torch.tensor(meta.std)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("luma", torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.gray:
            image = (image * self.luma).sum(dim=1, keepdim=True)
        out = self.model((image - self.mean) / self.std)
        return torch.softmax(out, dim=1) if self.softmax else out
