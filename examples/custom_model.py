"""A small user-defined network, to show `tb summary` on your own code.

    tb summary examples/custom_model.py:TinyNet
    tb summary examples/custom_model.py:TinyNet --model-arg width=32 --num-classes 3
    tb summary examples/custom_model.py:tiny_net_gray --input-size 1,28,28 --json

`tb summary` imports this file, calls the class (or factory) with the `--model-arg` values as
keyword arguments, and runs one forward pass on a zero batch of `input_size` (below) unless
`--input-size` says otherwise. Its head is the last `nn.Linear`, which `--num-classes` replaces.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_chans: int, out_chans: int, stride: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU: the usual building block."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(inplace=True),
    )


class TinyNet(nn.Module):
    """Three conv blocks that halve the resolution, global average pooling, a linear head."""

    # tb summary's default input when no --input-size is given: (channels, height, width).
    input_size = (3, 32, 32)

    def __init__(self, num_classes: int = 10, width: int = 16, in_chans: int = 3) -> None:
        super().__init__()
        self.input_size = (in_chans, 32, 32)
        self.features = nn.Sequential(
            conv_block(in_chans, width, stride=1),
            conv_block(width, width * 2, stride=2),
            conv_block(width * 2, width * 4, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def tiny_net_gray(num_classes: int = 10) -> TinyNet:
    """A factory: TinyNet for one-channel images such as (Fashion-)MNIST."""
    model = TinyNet(num_classes=num_classes, in_chans=1)
    model.input_size = (1, 28, 28)
    return model


if __name__ == "__main__":
    net = TinyNet()
    print(net(torch.zeros(2, *net.input_size)).shape)  # torch.Size([2, 10])
