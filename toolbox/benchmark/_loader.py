"""`--data DIR`: the input pipeline alone, the very loader `tb finetune` streams its training
images through (decode, resize and crop in `--workers` processes), so a user can see whether
loading or compute bounds a run."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from toolbox.benchmark._timing import Timing, time_steps


def _endless(loader) -> Iterator:
    for epoch in itertools.count():
        yield from loader.batches(epoch)


def time_loader(data: str | Path, *, batch_size: int, img_size: int, workers: int,
                warmup: int, min_steps: int, min_time: float) -> Timing:
    """Batches of the training images of `data` (an ImageFolder tree, or one with train/ and
    val/) at `img_size`, shuffled as an uncached `tb finetune` epoch takes them, epoch after
    epoch; the warm-up steps include starting the worker processes.

    Raises:
        ToolboxError: no such folder, no class folders, an empty class.
    """
    from toolbox import runs
    from toolbox.models import ModelMeta
    from toolbox.sources import image_folder_source
    from toolbox.train.data import BatchLoader, PreparedImages

    root = Path(data)
    train_dir, _ = runs.split_folders(root)
    source = image_folder_source(train_dir, root)
    meta = ModelMeta(model="data", num_classes=len(source.classes),
                     input_size=(3, img_size, img_size))
    images = PreparedImages(source, meta, cache=False, workers=workers)
    loader = BatchLoader(images, batch_size=batch_size, shuffle=True, seed=0, workers=workers,
                         drop_last=len(images) > batch_size)
    batches = _endless(loader)

    def step() -> int:
        return len(next(batches)[0])

    try:
        return time_steps(step, warmup=warmup, min_steps=min_steps, min_time=min_time,
                          sync=lambda: None)
    finally:
        batches.close()  # ends the epoch's iterator and with it the worker processes
        del loader
