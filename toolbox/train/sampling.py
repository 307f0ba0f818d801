"""The order of an epoch's samples: each rank's share of a split, the seeded per-epoch order (or
balanced draws), and the per-sample augmentation seeds that make a resumed epoch repeat."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from toolbox.sources import SubsetSource


def rank_share(source: Any, rank: int, world_size: int) -> Any:
    """The samples of a split that one rank of `world_size` decodes, keeps and uses: a fixed
    stride (every class is in every share, as splits are listed class by class).

    Under `torchrun` each rank then holds 1/N of the decoded images instead of all of them; it
    shuffles its own share every epoch (`epoch_indices`), and DDP averages the gradients of all
    shares, so every sample still counts once per epoch.
    """
    if world_size <= 1:
        return source
    return SubsetSource(source, np.arange(rank, len(source), world_size))


def epoch_indices(n: int, *, epoch: int, seed: int, shuffle: bool, rank: int = 0,
                  length: int | None = None, weights: torch.Tensor | None = None
                  ) -> list[int]:
    """The order of a rank's `n` samples for `epoch`: a permutation seeded by (seed, epoch,
    rank), so a resumed run sees the very same order, padded by wrapping around to `length`, so
    that every rank takes the same number of steps (shares differ by one sample).

    With `weights` (`--sampler balanced`), the epoch is instead `length` (or `n`) draws with
    replacement in proportion to them, seeded the same way: under `torchrun` each rank draws
    its share of the epoch from its own `rank_share`, which holds every class.
    """
    # rank 0 keeps the single-process order; other ranks draw their own.
    generator = torch.Generator().manual_seed(seed + epoch + 1_000_003 * rank)
    if weights is not None and n:
        return torch.multinomial(weights, length or n, replacement=True,
                                 generator=generator).tolist()
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    if length is not None and n:
        order = (order * math.ceil(length / n))[:length]
    return order


def sample_seed(seed: int, epoch: int, index: int, repeat: int = 0) -> int:
    """Independent augmentation seed per (run seed, epoch, sample): the same images get the same
    augmentation whatever the worker count, and a resumed epoch repeats exactly. `repeat` counts
    earlier draws of the sample in the epoch (`--sampler balanced` draws with replacement), so
    that a minority image drawn five times is augmented five ways; 0 keeps the seed of a
    single draw."""
    keys = [seed, epoch, index] + ([repeat] if repeat else [])
    return int(np.random.SeedSequence(keys).generate_state(1)[0])


class EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, index, repeat): persistent workers learn the epoch for seeding, and how
    many times the epoch drew the sample before (see `sample_seed`)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.order: list[int] = []

    def set(self, epoch: int, order: list[int]) -> None:
        self.epoch, self.order = epoch, order

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        drawn: dict[int, int] = {}
        for i in self.order:
            drawn[i] = drawn.get(i, -1) + 1
            yield self.epoch, i, drawn[i]

    def __len__(self) -> int:
        return len(self.order)
