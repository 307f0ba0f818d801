"""Segmentation data: image/mask pairs on disk, checked, resized once, and augmented together.

Layout: `DIR/train/images/*` with `DIR/train/masks/<same stem>.png`, and `DIR/val/...` likewise
(or a seeded `--val-split` of train). Masks hold class indices (8-bit or palette PNGs); 255 marks
pixels to ignore. Class names come from `DIR/classes.txt` (one a line, background first) or are
numbered from the largest index found. A bad pair (no mask, sizes that differ, an index beyond the
classes, an unreadable file) is skipped with its reason, never a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolbox import runs
from toolbox.errors import ToolboxError
from toolbox.images import ImageReadError, collect_images, read_image, read_mask
from toolbox.progress import NullProgress, Progress
from toolbox.segment.losses import IGNORE_INDEX
from toolbox.sources import SkippedFile, shown_path

if TYPE_CHECKING:
    import torch

    from toolbox.models import ModelMeta

IMAGES_DIR = "images"
MASKS_DIR = "masks"
CLASSES_FILE = "classes.txt"
BINARY_CLASSES = ["background", "foreground"]


@dataclass(frozen=True)
class Pair:
    """An image and its mask."""

    image: Path
    mask: Path


@dataclass
class SegmentSplits:
    """The checked training and validation pairs and the class names."""

    train: list[Pair]
    val: list[Pair]
    classes: list[str]
    description: str
    skipped: list[SkippedFile] = field(default_factory=list)
    not_images: list[SkippedFile] = field(default_factory=list)  # none: pairs are by name


def find_pairs(split_dir: Path, root: Path | None = None
               ) -> tuple[list[Pair], list[SkippedFile]]:
    """`split_dir/images/*` matched with `split_dir/masks/<stem>.png` by file stem (skipped
    images named relative to `root`, the folder the user gave)."""
    images_dir, masks_dir = split_dir / IMAGES_DIR, split_dir / MASKS_DIR
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise ToolboxError(f"{split_dir} has no {IMAGES_DIR}/ and {MASKS_DIR}/ folders",
                           f"segmentation data is DIR/train/{IMAGES_DIR}/* with "
                           f"DIR/train/{MASKS_DIR}/<same name>.png")
    masks = {f.relative.with_suffix(""): f.path for f in collect_images(masks_dir)}
    pairs, bad = [], []
    for image in collect_images(images_dir):
        mask = masks.get(image.relative.with_suffix(""))
        if mask is None:
            bad.append(SkippedFile(shown_path(image.path, root),
                                   f"no mask {MASKS_DIR}/{image.relative.with_suffix('.png')}"))
        else:
            pairs.append(Pair(image.path, mask))
    return pairs, bad


def read_classes(data: Path) -> list[str] | None:
    """Class names from `DIR/classes.txt` (blank lines ignored), or None without the file."""
    path = data / CLASSES_FILE
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    if len(names) < 2:
        raise ToolboxError(f"{path} names {len(names)} class(es); segmentation needs the "
                           "background and at least one more", "one class name a line")
    return names


def _mask_facts(pair: Pair) -> tuple[int, tuple[Path, str] | None]:
    """(largest class index, problem) of one pair, reading the mask and the image header."""
    from PIL import Image

    try:
        mask = read_mask(pair.mask)
    except ImageReadError as exc:
        return -1, (pair.mask, exc.reason)
    try:
        with Image.open(pair.image) as img:
            width, height = img.size
    except (OSError, ValueError):
        return -1, (pair.image, "not an image")
    if mask.shape != (height, width):
        return -1, (pair.mask, f"mask is {mask.shape[1]}x{mask.shape[0]}, image is "
                               f"{width}x{height}")
    labels = mask[mask != IGNORE_INDEX]
    return (int(labels.max()) if labels.size else 0), None


def check_pairs(pairs: Sequence[Pair], num_classes: int | None, workers: int = 1,
                root: Path | None = None) -> tuple[list[Pair], list[SkippedFile], int]:
    """Pairs whose mask fits its image and the classes; (good, bad, largest index seen)."""
    workers = max(1, workers)
    with ThreadPoolExecutor(workers) as pool:
        facts = list(pool.map(_mask_facts, pairs, chunksize=32))
    good, bad, top = [], [], 0
    for pair, (largest, problem) in zip(pairs, facts, strict=True):
        if problem is None and num_classes is not None and largest >= num_classes:
            problem = (pair.mask, f"class index {largest} but there are only {num_classes} "
                                  f"classes (0..{num_classes - 1}; {IGNORE_INDEX} = ignore)")
        if problem is None:
            good.append(pair)
            top = max(top, largest)
        else:
            bad.append(SkippedFile(shown_path(problem[0], root), problem[1]))
    return good, bad, top


def load_segment_splits(*, data: str | Path, val_split: float, seed: int, workers: int = 1
                        ) -> SegmentSplits:
    """Find, pair and check the segmentation data under `data`.

    Raises:
        ToolboxError: no such folder, no pairs at all, or an empty split.
    """
    data = Path(data)
    if not data.is_dir():
        raise ToolboxError(f"no such data folder: {data}",
                           f"pass DIR with DIR/train/{IMAGES_DIR} and DIR/train/{MASKS_DIR}")
    train_dir, held_out = runs.split_folders(data)
    if not (train_dir / IMAGES_DIR).is_dir() and (data / IMAGES_DIR).is_dir():
        train_dir = data  # DIR/images + DIR/masks: one pool, split by --val-split
    train, skipped = find_pairs(train_dir, data)
    val: list[Pair] = []
    if held_out is not None:
        val, bad = find_pairs(held_out, data)
        skipped += bad
    classes = read_classes(data)
    everything = train + val
    good, bad, top = check_pairs(everything, len(classes) if classes else None, workers, data)
    skipped += bad
    kept = set(good)
    train, val = [p for p in train if p in kept], [p for p in val if p in kept]
    if classes is None:
        classes = (list(BINARY_CLASSES) if top <= 1
                   else ["background", *[f"class {i}" for i in range(1, top + 1)]])
    if held_out is None:
        order = np.random.default_rng(seed).permutation(len(train))
        n_val = max(1, round(len(train) * val_split)) if len(train) >= 2 else 0
        val = [train[i] for i in sorted(order[:n_val])]
        train = [train[i] for i in sorted(order[n_val:])]
        description = f"{train_dir} ({val_split:g} validation split, seed {seed})"
    else:
        description = f"{data} (train/ and {held_out.name}/)"
    if not train or not val:
        first = f"; e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""
        raise ToolboxError(f"{data}: the training or validation split has no usable image/mask "
                           f"pair ({len(skipped)} skipped{first})",
                           f"put images in train/{IMAGES_DIR} and masks with the same names "
                           f"in train/{MASKS_DIR}")
    return SegmentSplits(train, val, classes, description, skipped)


def resize_pair(image: np.ndarray, mask: np.ndarray | None, meta: ModelMeta
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(H, W, 3) image and (H, W) mask -> the model's input size: uint8 (C, h, w) image
    (antialiased, the model's interpolation) and uint8 (h, w) mask (nearest neighbour).

    The whole frame is kept (no crop): a segmentation covers every pixel of the input.
    """
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    channels, height, width = meta.input_size
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if channels == 1:
        tensor = F.rgb_to_grayscale(tensor)
    if tuple(tensor.shape[-2:]) != (height, width):
        mode = meta.interpolation if meta.interpolation in ("bilinear", "bicubic") else "bilinear"
        tensor = F.resize(tensor, [height, width], interpolation=InterpolationMode(mode),
                          antialias=True)
    if mask is None:
        return tensor.contiguous(), None
    target = torch.from_numpy(np.ascontiguousarray(mask.astype(np.uint8)))[None]
    if tuple(target.shape[-2:]) != (height, width):
        target = F.resize(target, [height, width], interpolation=InterpolationMode.NEAREST)
    return tensor.contiguous(), target[0].contiguous()


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """The decoded image (H, W, 3) uint8 and mask (H, W) uint8 of a checked pair."""
    return read_image(pair.image), read_mask(pair.mask).astype(np.uint8)


class PreparedPairs:
    """Images and masks resized once to the model's input, kept in memory as uint8 tensors.

    `tensor` (N, C, H, W) and `targets` (N, H, W) have the shapes the training loaders slice,
    so the classification `BatchLoader` and `ShardLoader` serve segmentation batches as they are.
    """

    def __init__(self, pairs: Sequence[Pair], meta: ModelMeta, *, workers: int,
                 progress: Progress | None = None, label: str = "pairs") -> None:
        import torch

        self.pairs = list(pairs)
        self.meta = meta
        self.label = label
        self.progress = progress or NullProgress()
        self.skipped: list[SkippedFile] = []
        self.complete = True  # decoded up front: the loaders slice it, no worker decodes
        n = len(self.pairs)
        self.tensor = torch.empty((n, *meta.input_size), dtype=torch.uint8)
        self.targets = torch.empty((n, *meta.input_size[1:]), dtype=torch.uint8)
        bad: dict[int, ImageReadError] = {}

        def work(i: int) -> None:
            try:
                self.tensor[i], self.targets[i] = resize_pair(*read_pair(self.pairs[i]), meta)
            except ImageReadError as exc:
                bad[i] = exc

        self.progress.start(f"decoding {label}", total=n, unit="images")
        try:
            with ThreadPoolExecutor(max(1, workers)) as pool:
                for _ in pool.map(work, range(n), chunksize=16):
                    self.progress.advance()
        finally:
            self.progress.finish()
        if bad:
            if len(bad) == n:
                raise ToolboxError(f"none of the {n} {label} could be read "
                                   f"({next(iter(bad.values())).message})", "check the data folder")
            keep = torch.as_tensor([i for i in range(n) if i not in bad], dtype=torch.long)
            self.skipped = [SkippedFile(str(exc.path), exc.reason)
                            for _, exc in sorted(bad.items())]
            self.tensor = self.tensor.index_select(0, keep)
            self.targets = self.targets.index_select(0, keep)
            self.pairs = [self.pairs[i] for i in keep.tolist()]

    def __len__(self) -> int:
        return len(self.targets)

    def readable(self, index: torch.Tensor) -> torch.Tensor:
        """All of `index`: unreadable pairs were left out while decoding."""
        return index

    def finish(self) -> None:
        """Nothing to complete after an epoch: everything was decoded up front."""

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get a copy; a terminal progress display need not travel with it.
        return {**self.__dict__, "progress": NullProgress()}
