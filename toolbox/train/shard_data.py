"""Training from WebDataset tar shards: the samples streamed through webdataset's stages in the
loader's workers, and batches of exactly the size and number the epoch plan says.

Every process of a `torchrun` job reads its own shards (`split_by_node`: every N-th), and each
of its loader workers its own part of those (`split_by_worker`); the shard order is shuffled
per epoch (the same in every worker of a process, so the workers still split one list) and
samples pass a seeded shuffle buffer. So each sample is read once an epoch, and the counts in
the shard index say before anything is read how many batches every process takes.

Workers hand over chunks of decoded uint8 images a batch long (one transfer per chunk, not per
image). This process passes a whole chunk on as it is and makes batches of the shorter ones
(each worker's last, and those with unreadable samples) together: a copy of every batch cost
it 0.3 ms of CPU an image, five times the folder loader's, and capped the shards' rate.

DDP needs every process to take the same number of steps:
a process whose shards hold fewer samples (or whose samples could not all be read) repeats
some of its first ones to make up its last batches, as `DistributedSampler` pads; a last batch
of one image gets a second one, since BatchNorm cannot train on a single sample.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from toolbox.errors import ToolboxError, UsageError
from toolbox.images import ImageReadError, read_image_bytes
from toolbox.models import ModelMeta
from toolbox.preprocess import resize_crop_uint8
from toolbox.progress import NullProgress, Progress
from toolbox.sources import SkippedFile
from toolbox.train.data import collate_samples
from toolbox.train.distributed import launch_ranks
from toolbox.train.run_data import RunData
from toolbox.train.sampling import sample_seed


def key_number(key: str) -> int:
    """A sample's key as a number for `sample_seed`: its augmentation then follows the sample,
    not where in the stream it came."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class ShardStream(torch.utils.data.IterableDataset):
    """The samples of this process's shards, decoded (and augmented) in the loader workers;
    each item is `(image, label, None, key)` or `(None, label, SkippedFile, key)`."""

    def __init__(self, shards: Any, meta: ModelMeta, *, seed: int, shuffle: bool,
                 buffer: int, augment: str | None = None) -> None:
        self.urls, self.classes, self.meta = shards.urls, shards.classes, meta
        # what the index says each shard holds, so a cut-off shard is reported
        self.counts = {url.rsplit("/", 1)[-1]: n
                       for url, n in zip(shards.urls, shards.counts, strict=True)}
        self.seed, self.shuffle, self.buffer, self.augment = seed, shuffle, buffer, augment
        self.epoch = 0  # set before each pass; workers get a fresh copy every epoch
        self._augmenter: Any = None

    def __iter__(self) -> Iterator[tuple]:
        from toolbox.datasets import read_samples

        info = torch.utils.data.get_worker_info()
        rank = launch_ranks()[0]  # what webdataset's split_by_node reads too
        worker = info.id if info is not None else 0
        seeds = np.random.SeedSequence([self.seed, self.epoch, rank, worker])
        samples = read_samples(
            self.urls, self.classes, split_nodes=True, split_workers=True,
            shuffle_shards_seed=(int(np.random.SeedSequence([self.seed, self.epoch, rank])
                                     .generate_state(1)[0]) if self.shuffle else None),
            buffer=self.buffer if self.shuffle else 0, seed=int(seeds.generate_state(1)[0]),
            counts=self.counts)
        for sample in samples:
            label = torch.tensor(sample.label)
            if sample.skipped is not None:
                yield None, label, sample.skipped, sample.key
                continue
            try:
                image = read_image_bytes(sample.data, f"{sample.key}.{sample.ext}")
            except ImageReadError as exc:
                yield None, label, SkippedFile(f"{sample.url}:{sample.key}", exc.reason), \
                    sample.key
                continue
            tensor = resize_crop_uint8(image, self.meta)
            if self.augment:
                tensor = self._augmented(tensor, sample.key)
            yield tensor, label, None, sample.key

    def _augmented(self, tensor: torch.Tensor, key: str) -> torch.Tensor:
        if self._augmenter is None:
            from toolbox.augment import build_augmenter

            self._augmenter = build_augmenter(self.augment, seed=self.seed)
        self._augmenter.seed_(sample_seed(self.seed, self.epoch, key_number(key)))
        array = self._augmenter.augment_image(tensor.permute(1, 2, 0).numpy())
        return resize_crop_uint8(np.ascontiguousarray(array), self.meta)


class StreamedSplit:
    """What a run knows of one split of shards before and while reading it: this process's
    sample count and the samples it could not use."""

    def __init__(self, count: int, label: str, progress: Progress | None = None) -> None:
        self.count, self.label = count, label
        self.skipped: list[SkippedFile] = []
        self.progress = progress or NullProgress()
        self.grid = None

    def __len__(self) -> int:
        return self.count

    def note_skipped(self, items: list[SkippedFile]) -> None:
        seen = {item.path for item in self.skipped}
        new = [item for item in items if item.path not in seen]
        if new:
            self.skipped.extend(new)
            self.progress.note(f"skipped {len(new)} sample(s), e.g. {new[0].path}: "
                               f"{new[0].reason} ({self.label})")


def _loader(stream: ShardStream, chunk: int, workers: int, pin_memory: bool) -> Any:
    return torch.utils.data.DataLoader(
        stream, batch_size=chunk, num_workers=workers, collate_fn=collate_samples,
        pin_memory=pin_memory, prefetch_factor=4 if workers > 0 else None)


class ShardBatches:
    """The training batches of an epoch: `steps` batches of `batch_size` on every process."""

    def __init__(self, stream: ShardStream, split: StreamedSplit, *, batch_size: int,
                 steps: int, workers: int, pin_memory: bool = False,
                 record_keys: bool = False) -> None:
        self.stream, self.split = stream, split
        self.batch_size, self.steps = batch_size, steps
        self.loader = _loader(stream, batch_size, workers, pin_memory)
        self.keys: list[str] | None = [] if record_keys else None  # keys of the last epoch

    def num_batches(self, epoch: int = 0) -> int:
        return self.steps

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.stream.epoch = epoch
        if self.keys is not None:
            self.keys = []
        return self._exact(iter(self.loader))

    def _exact(self, chunks: Iterator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        held, made = 0, 0
        spare: tuple[torch.Tensor, torch.Tensor] | None = None  # repeats, for padding
        skipped: list[SkippedFile] = []
        for keys, batch, labels, bad in chunks:
            skipped.extend(item for _, item in bad)
            if batch is None:
                continue
            if self.keys is not None:
                self.keys.extend(keys)
            if spare is None:
                spare = (batch[:self.batch_size].clone(), labels[:self.batch_size].clone())
            if len(batch) == self.batch_size and made < self.steps:  # a whole chunk: no copy
                made += 1
                yield batch, labels
                continue
            images.append(batch)  # shorter chunks (a worker's last, skips) make up batches
            targets.append(labels)
            held += len(batch)
            while held >= self.batch_size and made < self.steps:
                x, y = torch.cat(images), torch.cat(targets)
                images, targets = [x[self.batch_size:]], [y[self.batch_size:]]
                held -= self.batch_size
                made += 1
                yield x[:self.batch_size], y[:self.batch_size]
        if skipped:
            self.split.note_skipped(skipped)
        while made < self.steps:
            if spare is None:
                raise ToolboxError(f"none of this process's {self.split.label} could be read"
                                   + (f" ({skipped[0].path}: {skipped[0].reason})"
                                      if skipped else ""),
                                   "check the shards (tb datasets pack writes them)")
            last = made == self.steps - 1
            want = max(held, 2) if last else self.batch_size
            x = torch.cat([*images, *([spare[0]] * math.ceil(want / len(spare[0])))])
            y = torch.cat([*targets, *([spare[1]] * math.ceil(want / len(spare[1])))])
            yield x[:want], y[:want]
            images, targets, held = [], [], 0
            made += 1


class ShardVal:
    """Validation batches of this process's validation shards, each sample once."""

    def __init__(self, stream: ShardStream, split: StreamedSplit, *, batch_size: int,
                 workers: int) -> None:
        self.split, self.batch_size = split, batch_size
        self.loader = _loader(stream, batch_size, workers, False)
        self.started: Any = None  # the next pass, workers already forked (`start`)

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def start(self) -> None:
        """Start the next pass's loader workers now (see `RunData.start_epoch`)."""
        if self.started is None:
            self.started = iter(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        skipped = []
        # Not `started or loader`: truth-testing a loader asks for its length, which a stream lacks.
        batches = self.loader if self.started is None else self.started
        self.started = None
        for _, batch, labels, bad in batches:
            skipped.extend(item for _, item in bad)
            if batch is not None:
                yield batch, labels
        if skipped:
            self.split.note_skipped(skipped)


def shard_run_data(splits: Any, meta: ModelMeta, *, batch_size: int, seed: int, workers: int,
                   augment: str | None, buffer: int, cache: bool | None, sampler: str,
                   rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                   progress: Progress | None = None, record_keys: bool = False) -> RunData:
    """A run's loaders over tar shards (`splits.train` and `.val` are `ShardSet`s).

    Raises:
        UsageError: options that need indexable data (`--cache`, `--sampler balanced`), or
            fewer shards than processes.
    """
    import webdataset  # noqa: F401  here, once: forked loader workers inherit it, not import it

    from toolbox.datasets import shards_of

    if cache:
        raise UsageError("--cache does not apply to shards: they are streamed", param="--cache")
    if sampler != "shuffle":
        raise UsageError(f"--sampler {sampler} needs indexable data; shards are streamed",
                         "use --class-weights auto to balance the classes",
                         param="--sampler")
    train, val = splits.train, splits.val
    if len(train.urls) < world_size:
        raise ToolboxError(f"{len(train.urls)} training shard(s) for {world_size} processes: "
                           "each process reads whole shards",
                           "pack with a smaller --shard-size, or start fewer processes")
    if augment:
        from toolbox.augment import build_augmenter

        build_augmenter(augment, seed=seed)  # fails fast on a bad spec
    per_rank = [sum(train.counts[i] for i in shards_of(train, r, world_size))
                for r in range(world_size)]
    mine = per_rank[rank]
    steps = math.ceil(max(per_rank) / batch_size)
    val_count = sum(val.counts[i] for i in shards_of(val, rank, world_size))
    train_split = StreamedSplit(mine, "training samples", progress)
    val_split = StreamedSplit(val_count, "validation samples", progress)
    stream = ShardStream(train, meta, seed=seed, shuffle=True, buffer=buffer, augment=augment)
    loader = ShardBatches(stream, train_split, batch_size=batch_size, steps=steps,
                          workers=workers, pin_memory=pin_memory, record_keys=record_keys)
    val_stream = ShardStream(val, meta, seed=seed, shuffle=False, buffer=0)
    val_loader = ShardVal(val_stream, val_split, batch_size=batch_size * 2, workers=workers)
    counts = np.sum(np.asarray(train.class_counts, dtype=np.int64), axis=0).tolist()
    return RunData(train_split, val_split, loader, val_loader, False, class_counts=counts,
                   unit="unreadable sample(s)",
                   features="computed each epoch (shards are streamed, not named image by "
                            "image)")
