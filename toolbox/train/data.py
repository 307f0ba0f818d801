"""Training data: decoding once (or in the loader's workers), and the batches of an epoch.

Where the samples come from is `train.splits`; the order they come in, `train.sampling`.

Every source yields (H, W, 3) uint8 images read by `toolbox.images` (the same channel rules as
`tb augment`). Images are resized and cropped once to the model's input size with the very
function `eval_tensor` uses (`resize_crop_uint8`), kept as uint8, and normalised a batch at a time
on the training device, so validation sees exactly what `tb evaluate` feeds the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from toolbox.errors import ToolboxError
from toolbox.images import ImageReadError
from toolbox.models import ModelMeta
from toolbox.preprocess import resize_crop_uint8
from toolbox.progress import NullProgress, Progress
from toolbox.sources import SkippedFile
from toolbox.train import balance
from toolbox.train.run_data import RunData
from toolbox.train.sampling import EpochSampler, epoch_indices, rank_share, sample_seed
from toolbox.train.splits import DataSplits

CACHE_BUDGET_BYTES = 4 * 1024**3  # decoded uint8 images kept in memory up to this size


class PreparedImages:
    """Images resized and cropped to the model's input, as uint8 (C, H, W): cached or on demand.

    With `cache`, every image is decoded and resized once and kept in one uint8 tensor; epochs
    then cost no decoding at all. With `lazy` too, nothing is decoded up front: the first pass
    decodes in the loader's worker processes, as an uncached run does, while training, and
    `keep` stores what they return (`finish` decodes what that pass did not reach). Without
    `lazy`, a thread pool decodes everything before the first step (PIL and torch release the
    GIL).
    """

    def __init__(self, source: Any, meta: ModelMeta, *, cache: bool, workers: int,
                 progress: Progress | None = None, label: str = "images",
                 lazy: bool = False) -> None:
        self.source = source
        self.meta = meta
        self.targets = torch.as_tensor(np.asarray(source.targets), dtype=torch.long)
        self.tensor: torch.Tensor | None = None
        self.known: torch.Tensor | None = None  # lazy cache: rows of `tensor` that are decoded
        self.bad: torch.Tensor | None = None  # lazy cache: rows that cannot be read
        self.skipped: list[SkippedFile] = []  # unreadable files left out
        self.label = label
        self.workers = max(1, workers)
        self.progress = progress or NullProgress()
        if cache and lazy:
            n = len(self.targets)
            self.tensor = torch.empty((n, *meta.input_size), dtype=torch.uint8)
            self.known = torch.zeros(n, dtype=torch.bool)
            self.bad = torch.zeros(n, dtype=torch.bool)
        elif cache:
            self.tensor = self._decode_all(self.workers, self.progress, label)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get a copy; a terminal progress display need not travel with it.
        return {**self.__dict__, "progress": NullProgress()}

    def __len__(self) -> int:
        return len(self.targets)

    def note_skipped(self, skipped: Sequence[tuple[int, SkippedFile]]) -> None:
        """Record samples the streaming path could not read; note the new ones once."""
        if self.bad is not None:
            for index, _ in skipped:
                self.bad[index] = True
        seen = {item.path for item in self.skipped}
        new = [item for item in dict.fromkeys(item for _, item in skipped)
               if item.path not in seen]
        if new:
            self.skipped.extend(new)
            self.progress.note(f"skipped {len(new)} unreadable image(s), e.g. {new[0].path}: "
                               f"{new[0].reason} ({self.label})")

    @property
    def complete(self) -> bool:
        """Whether every image is in memory (or known to be unreadable)."""
        if self.tensor is None:
            return False
        return self.known is None or bool((self.known | self.bad).all())

    def get(self, index: int) -> torch.Tensor:
        if self.tensor is not None and (self.known is None or self.known[index]):
            return self.tensor[index]
        return resize_crop_uint8(self.source.load(index), self.meta)

    def keep(self, indices: list[int], batch: torch.Tensor) -> None:
        """Store images a loader worker decoded (lazy cache only)."""
        if self.known is not None:
            index = torch.as_tensor(indices, dtype=torch.long)
            self.tensor.index_copy_(0, index, batch)
            self.known[index] = True

    def finish(self) -> None:
        """Decode here what the first pass left (samples `drop_last` dropped, other ranks'
        shards), so the next passes slice the cache."""
        if self.known is None or self.complete:
            return
        missing = (~(self.known | self.bad)).nonzero().flatten().tolist()
        bad: dict[int, ImageReadError] = {}

        def work(i: int) -> None:
            try:
                self.tensor[i] = resize_crop_uint8(self.source.load(i), self.meta)
                self.known[i] = True
            except ImageReadError as exc:
                bad[i] = exc

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(work, missing))
        self.note_skipped([(i, SkippedFile(self.source.describe(i), exc.reason))
                           for i, exc in sorted(bad.items())])

    def readable(self, index: torch.Tensor) -> torch.Tensor:
        """`index` without the samples known to be unreadable."""
        return index if self.bad is None else index[~self.bad[index]]

    def _decode_all(self, workers: int, progress: Progress, label: str) -> torch.Tensor:
        n = len(self.source)
        out = torch.empty((n, *self.meta.input_size), dtype=torch.uint8)
        progress.start(f"decoding {label}", total=n, unit="images")

        bad: dict[int, ImageReadError] = {}

        def work(i: int) -> None:
            try:
                out[i] = resize_crop_uint8(self.source.load(i), self.meta)
            except ImageReadError as exc:  # skipped and reported, as `tb augment` does
                bad[i] = exc

        try:
            if workers > 1 and n > 64:
                with ThreadPoolExecutor(workers) as pool:
                    for _ in pool.map(work, range(n), chunksize=32):
                        progress.advance()
            else:
                for i in range(n):
                    work(i)
                    progress.advance()
        finally:
            progress.finish()
        if bad:
            if len(bad) == n:
                first = next(iter(bad.values()))
                raise ToolboxError(f"none of the {n} {label} could be read ({first.message})",
                                   "check the data folder")
            keep = torch.as_tensor([i for i in range(n) if i not in bad], dtype=torch.long)
            self.skipped = [SkippedFile(self.source.describe(i), exc.reason)
                            for i, exc in sorted(bad.items())]
            self.targets = self.targets.index_select(0, keep)
            out = out.index_select(0, keep)
        return out


def cache_fits(n_images: int, meta: ModelMeta, budget: int = CACHE_BUDGET_BYTES) -> bool:
    """Whether `n_images` decoded at the model's input size fit the in-memory budget."""
    return n_images * math.prod(meta.input_size) <= budget


# A sample from a DataLoader worker: (image, label, None, index), or (None, label,
# SkippedFile, index) for a file that could not be read.
_Item = tuple["torch.Tensor | None", torch.Tensor, "SkippedFile | None", int]


class AugmentedDataset(torch.utils.data.Dataset):
    """Training samples with `--augment` applied in the DataLoader worker processes."""

    def __init__(self, images: PreparedImages, augment: str, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.images = images
        self.augment = augment
        self.seed = seed
        # Local sample i of a `rank_share` is sample i * world_size + rank of the split: seeds
        # follow the split's index, so a sample's augmentation does not depend on the ranks.
        self.rank, self.world_size = rank, world_size
        self._augmenter: Any = None  # built lazily, once per worker process

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int, int]) -> _Item:
        epoch, index, repeat = item
        try:
            image = self.images.get(index)
        except ImageReadError as exc:  # torch cannot re-raise it from a worker; skip instead
            return None, self.images.targets[index], SkippedFile(
                self.images.source.describe(index), exc.reason), index
        if self._augmenter is None:
            from toolbox.augment import build_augmenter

            self._augmenter = build_augmenter(self.augment, seed=self.seed)
        self._augmenter.seed_(sample_seed(self.seed, epoch,
                                          index * self.world_size + self.rank, repeat))
        array = self._augmenter.augment_image(image.permute(1, 2, 0).numpy())
        tensor = resize_crop_uint8(np.ascontiguousarray(array), self.images.meta)
        return tensor, self.images.targets[index], None, index


class StreamDataset(torch.utils.data.Dataset):
    """Samples decoded in the workers each epoch (when the data set does not fit in memory)."""

    def __init__(self, images: PreparedImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int, int]) -> _Item:
        _, index, _ = item
        try:
            return self.images.get(index), self.images.targets[index], None, index
        except ImageReadError as exc:  # torch cannot re-raise it from a worker; skip instead
            return None, self.images.targets[index], SkippedFile(
                self.images.source.describe(index), exc.reason), index


def collate_samples(items: Sequence[_Item]
                     ) -> tuple[list[int], torch.Tensor | None, torch.Tensor,
                                list[tuple[int, SkippedFile]]]:
    """A batch of the readable samples (their indices too), and those that were not."""
    good = [(index, image, target) for image, target, error, index in items if error is None]
    images = torch.stack([image for _, image, _ in good]) if good else None
    targets = torch.stack([target for _, _, target in good]) if good else torch.empty(0)
    bad = [(index, error) for _, _, error, index in items if error is not None]
    return [index for index, _, _ in good], images, targets, bad


def _readable_batches(loader: Any, images: PreparedImages, keep: bool = False
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches without unreadable samples, which are counted and noted; with
    `keep`, plain (unaugmented) batches also fill a lazy cache."""
    yielded, skipped = False, []
    for indices, batch, targets, bad in loader:
        skipped.extend(bad)
        if batch is not None:
            if keep:
                images.keep(indices, batch)
            yielded = True
            yield batch, targets
    if skipped:
        images.note_skipped(skipped)
        if not yielded:
            first = skipped[0][1]
            raise ToolboxError(f"none of the {images.label} could be read ({first.path}: "
                               f"{first.reason})",
                               "check the data folder")
    images.finish()


class BatchLoader:
    """uint8 image batches and labels for one epoch, in the order `epoch_indices` gives.

    Under `torchrun`, `images` is this rank's `rank_share` and `length` the largest share, so
    that all ranks take the same number of steps.

    From the in-memory cache without augmentation, batches are sliced in this process (no
    workers, no copies through pipes); otherwise a DataLoader decodes and augments, its workers
    persistent unless it only has to fill a lazy cache in the first epoch.
    """

    def __init__(self, images: PreparedImages, *, batch_size: int, shuffle: bool, seed: int,
                 workers: int, rank: int = 0, world_size: int = 1, length: int | None = None,
                 augment: str | None = None, drop_last: bool = False,
                 pin_memory: bool = False, dataset: torch.utils.data.Dataset | None = None,
                 weights: torch.Tensor | None = None) -> None:
        self.images = images
        self.weights = weights  # per-sample draw weights (--sampler balanced), else None
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.length = rank, length
        self.drop_last = drop_last
        self.augment = augment
        self.loader = None
        self.sampler: EpochSampler | None = None
        if augment or not images.complete:
            if dataset is None:
                dataset = (AugmentedDataset(images, augment, seed, rank, world_size) if augment
                           else StreamDataset(images))
            self.sampler = EpochSampler()
            every_epoch = bool(augment) or images.tensor is None
            self.loader = torch.utils.data.DataLoader(
                dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
                persistent_workers=workers > 0 and every_epoch, pin_memory=pin_memory,
                drop_last=drop_last, prefetch_factor=4 if workers > 0 else None,
                collate_fn=collate_samples)

    def _order(self, epoch: int) -> list[int]:
        return epoch_indices(len(self.images), epoch=epoch, seed=self.seed, shuffle=self.shuffle,
                             rank=self.rank, length=self.length, weights=self.weights)

    def num_batches(self, epoch: int = 0) -> int:
        n = len(self._order(epoch))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch`. Loader workers start here, not at the first batch, so a
        caller can do other start-up work while they decode."""
        order = self._order(epoch)
        if self.loader is not None and (self.augment or not self.images.complete):
            self.sampler.set(epoch, order)
            return _readable_batches(iter(self.loader), self.images, keep=not self.augment)
        return self._sliced(order)

    def _sliced(self, order: list[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        tensor, targets = self.images.tensor, self.images.targets
        index = torch.as_tensor(order, dtype=torch.long)
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        for start in range(0, stop, self.batch_size):
            idx = self.images.readable(index[start:start + self.batch_size])
            if len(idx):
                yield tensor.index_select(0, idx), targets.index_select(0, idx)


class ShardLoader:
    """Validation batches of a fixed list of indices (no shuffling, no padding): under
    `torchrun`, all of this rank's `rank_share`, so the sums over ranks are exact."""

    def __init__(self, images: PreparedImages, indices: list[int], batch_size: int,
                 workers: int) -> None:
        self.images = images
        self.indices = indices
        self.batch_size = batch_size
        self.loader = None
        self.started: Any = None  # the next pass's batches, workers already forked (`start`)
        if not images.complete:
            sampler = EpochSampler()
            sampler.set(0, indices)
            self.loader = torch.utils.data.DataLoader(
                StreamDataset(images), batch_size=batch_size, sampler=sampler,
                num_workers=workers, persistent_workers=workers > 0 and images.tensor is None,
                collate_fn=collate_samples)

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def start(self) -> None:
        """Start the next pass's loader workers now, if it has images to decode (see
        `RunData.start_epoch`)."""
        if self.loader is not None and not self.images.complete and self.started is None:
            self.started = iter(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader is not None and not self.images.complete:
            batches = self.loader if self.started is None else self.started
            self.started = None
            yield from _readable_batches(batches, self.images, keep=True)
            return
        index = torch.as_tensor(self.indices, dtype=torch.long)
        for start in range(0, len(index), self.batch_size):
            idx = self.images.readable(index[start:start + self.batch_size])
            if len(idx):
                yield (self.images.tensor.index_select(0, idx),
                       self.images.targets.index_select(0, idx))


def prepare_run_data(splits: DataSplits, meta: ModelMeta, *, batch_size: int, seed: int,
                     workers: int, cache: bool | None, augment: str | None, rank: int = 0,
                     world_size: int = 1, pin_memory: bool = False,
                     progress: Progress | None = None, sampler: str = "shuffle") -> RunData:
    """This rank's share of the images at the model's input size (cached in memory when
    `cache`, or when they fit the budget with `cache` None) and the loaders over them;
    `sampler` "balanced" draws every class about equally often (see `epoch_indices`)."""
    # Each rank decodes and keeps only its share of the data (1/N of the memory).
    train_share = rank_share(splits.train, rank, world_size)
    val_share = rank_share(splits.val, rank, world_size)
    cache = cache if cache is not None else cache_fits(len(train_share) + len(val_share), meta)
    if augment:
        from toolbox.augment import build_augmenter

        # Built once here only to fail fast on a bad spec; the workers build their own.
        build_augmenter(augment, seed=seed)
    # Augmented batches cannot fill the cache, so with --augment it is decoded up front;
    # otherwise the first epoch decodes in the loader workers while it trains.
    train = PreparedImages(train_share, meta, cache=cache, workers=workers, progress=progress,
                           label="training images", lazy=not augment)
    val = PreparedImages(val_share, meta, cache=cache, workers=workers, progress=progress,
                         label="validation images", lazy=True)
    # Counted over the whole split, which every rank holds, so no rank needs the others'.
    counts = balance.class_counts(splits.train.targets, len(splits.classes))
    weights = (torch.from_numpy(balance.sample_weights(train.targets.numpy(), counts))
               if sampler == "balanced" else None)
    # Rank 0's share is the largest: every rank pads its epoch to that many samples.
    per_rank = math.ceil(len(splits.train) / world_size)
    loader = BatchLoader(train, batch_size=batch_size, shuffle=True, seed=seed, workers=workers,
                         rank=rank, world_size=world_size,
                         length=per_rank if world_size > 1 else None, augment=augment,
                         drop_last=per_rank > batch_size, pin_memory=pin_memory,
                         weights=weights)
    val_loader = ShardLoader(val, list(range(len(val))), batch_size=batch_size * 2,
                             workers=workers)
    return RunData(train, val, loader, val_loader, cache, probed=splits.skipped,
                   class_counts=counts)
