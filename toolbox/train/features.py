"""A frozen classifier split into body and head: the body's pooled features (timm's
`forward_features`, then `forward_head(pre_logits=True)`), the head that trains on them (dropout
at the model's `drop_rate`, then the classifier, as timm's `forward_head` does after its
`pre_logits` point), and the pass that computes the features of images once.

Frozen and in eval mode, the body gives every epoch the same features of un-augmented images;
the head on those features is the very computation the whole model does, so training on them
is training the whole model with the backbone fixed.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from toolbox import interrupt
from toolbox.models import ModelMeta
from toolbox.progress import NullProgress, Progress
from toolbox.sources import SkippedFile
from toolbox.train import data as data_mod
from toolbox.train.engine import to_input

SPLIT = "timm-pre-logits"  # how the body ends: part of every feature set's key
GRID_IMAGES = 32


class HeadNet(nn.Module):
    """The part of `model` that trains on its pooled features: what timm's `forward_head` does
    after `pre_logits` (dropout at `drop_rate` while training, then the classifier).

    It holds the whole model (its parameters, DDP and the optimizer see the same tensors), and
    reads the classifier's training flag, which `train_mode` sets on the whole model.
    """

    def __init__(self, model: nn.Module, head: str) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.drop_rate = float(getattr(model, "drop_rate", 0.0) or 0.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        classifier = self.model.get_submodule(self.head)
        if self.drop_rate and classifier.training:
            features = F.dropout(features, p=self.drop_rate, training=True)
        return classifier(features)


def body_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled features the classifier takes: (N, dim)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def split_problem(model: nn.Module, head: str) -> str | None:
    """Why `model` cannot be split into body and head without running it, or None."""
    name = type(model).__name__
    if not (callable(getattr(model, "forward_features", None))
            and callable(getattr(model, "forward_head", None))):
        return f"{name} has no timm forward_features/forward_head to split it at"
    if not isinstance(model.get_submodule(head), nn.Linear):
        return f"the classifier of {name} ({head}) is not one Linear layer"
    return None


@torch.no_grad()
def check_split(model: nn.Module, head: str, input_size: Sequence[int],
                device: torch.device) -> str | None:
    """Whether the head on the body's features gives the whole model's logits (two random
    images, eval mode): None when it does, else why not. Run once, before features are
    computed; a set already cached passed it when it was written."""
    was_training = model.training
    model.eval()
    try:
        x = torch.randn((2, *input_size), generator=torch.Generator().manual_seed(0)).to(device)
        whole = model(x).float()
        parts = HeadNet(model, head)(body_features(model, x)).float()
    except Exception as exc:  # any architecture timm's protocol does not fit
        return f"{type(model).__name__} does not split at its pooled features " \
               f"({type(exc).__name__})"
    finally:
        model.train(was_training)
    if whole.shape != parts.shape or not torch.allclose(whole, parts, rtol=1e-4, atol=1e-5):
        return f"the classifier of {type(model).__name__} does not take its pooled features " \
               "as they are"
    return None


@dataclass
class FeaturePass:
    """The features of some images of a split: `rows[j]` belongs to local sample
    `indices[j]`; the unreadable ones are in `skipped` (local index, why)."""

    indices: list[int] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)  # float32 (k, dim) per batch
    skipped: list[tuple[int, SkippedFile]] = field(default_factory=list)
    seconds: float = 0.0
    grid: torch.Tensor | None = None  # the first decoded images (TensorBoard's image grid)


class _PassSamples(torch.utils.data.Dataset):
    """The samples of several feature passes in one index space: item (k, i) is sample i of
    pass k, so that one loader decodes them all."""

    def __init__(self, datasets: list[data_mod.StreamDataset]) -> None:
        self.datasets = datasets

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        k, index = item
        return self.datasets[k][(0, index, 0)]


def feature_batches(passes: Sequence[tuple[Any, list[int], str]], meta: ModelMeta, *,
                    batch_size: int, workers: int) -> tuple[Iterator[Any], list[int]]:
    """The decoded batches of every feature pass (a source, its sample indices and its label),
    pass after pass, from one loader; and how many batches each pass has.

    One loader, so one set of workers forked once, before any forward ran: workers forked for
    the validation pass after the training pass would share the heap its forwards grew, and
    each page the next forward wrote would be copied while they lived (see
    `RunData.start_epoch`); two sets alive at once would double what the workers hold.
    """
    datasets = [data_mod.StreamDataset(data_mod.PreparedImages(
        source, meta, cache=False, workers=workers, label=label))
        for source, _, label in passes]
    counts = [math.ceil(len(indices) / batch_size) for _, indices, _ in passes]
    batches = [[(k, i) for i in indices[start:start + batch_size]]
               for k, (_, indices, _) in enumerate(passes)
               for start in range(0, len(indices), batch_size)]
    if not batches:
        return iter(()), counts
    loader = torch.utils.data.DataLoader(
        _PassSamples(datasets), batch_sampler=batches, num_workers=workers,
        collate_fn=data_mod.collate_samples)
    return iter(loader), counts


def compute_features(model: nn.Module, batches: Any, total: int, *, meta: ModelMeta,
                     device: torch.device, autocast: Any = None,
                     progress: Progress | None = None, label: str = "images") -> FeaturePass:
    """The body's features of the `total` samples in `batches` (one pass's share of
    `feature_batches`), the body in eval mode without gradients, under `autocast` when given
    (a context-manager factory)."""
    progress = progress or NullProgress()
    done = FeaturePass()
    if not total:
        return done
    start = time.perf_counter()
    model.eval()
    progress.start(f"computing features of {label}", total=total, unit="images")
    try:
        with torch.no_grad():
            for local, batch, _, bad in batches:
                interrupt.check()
                done.skipped.extend(bad)
                if batch is not None:
                    if done.grid is None:
                        done.grid = batch[:GRID_IMAGES].clone()
                    x = to_input(batch, meta, device, channels_last=False)
                    with autocast() if autocast is not None else contextlib.nullcontext():
                        rows = body_features(model, x)
                    done.rows.append(rows.float().cpu().numpy())
                    done.indices.extend(local)
                progress.advance(len(local) + len(bad))
    finally:
        progress.finish()
    done.seconds = time.perf_counter() - start
    return done
