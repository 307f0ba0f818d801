"""Where a run's samples come from: a data folder (split or stratified), a fetched data set, or
the built-in digits, with unreadable files left out before a split is drawn."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolbox import runs
from toolbox.errors import ToolboxError, UsageError
from toolbox.sources import (
    ArraySource,
    FetchedSource,
    FileSource,
    SkippedFile,
    SubsetSource,
    image_folder_source,
)
from toolbox.train.config import DEMO_IMG_SIZE

DEMO_NAME = "scikit-learn digits"


@dataclass
class DataSplits:
    """The training and validation sources and how they were found."""

    train: Any
    val: Any
    classes: list[str]
    description: str
    is_demo: bool = False
    default_img_size: int | None = None
    skipped: list[SkippedFile] = field(default_factory=list)  # left out before splitting

    @property
    def not_images(self) -> list[Any]:
        """Files in the data folders that are not images (each reported, never used)."""
        sources = [getattr(s, "base", s) for s in (self.train, self.val)]
        found = [item for s in sources for item in getattr(s, "not_images", [])]
        return list(dict.fromkeys(found))  # a split folder's two subsets share one source

    @property
    def streamed(self) -> bool:
        """Whether the samples are tar shards read in order (not indexable sources)."""
        return not hasattr(self.train, "targets")


def stratified_split(targets: np.ndarray, val_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: about `val_fraction` of each class (at least one when it has two
    or more images) goes to validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(targets):
        idx = np.flatnonzero(targets == label)
        rng.shuffle(idx)
        n_val = round(len(idx) * val_fraction)
        n_val = min(max(n_val, 1), len(idx) - 1) if len(idx) >= 2 else 0
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


DIGITS_FILE = "demo-digits-v1.npz"  # in tb's cache dir: the digits as uint8, 17 KB


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (1797, 8, 8) uint8 and their labels: from tb's cache dir, else from
    scikit-learn, whose import alone takes 0.9 s of a demo run's start-up (measured after
    torch, which a warm `--freeze` run otherwise spends only 3 s past)."""
    from toolbox import paths
    from toolbox.fileio import atomic_path

    cached = paths.cache_dir() / DIGITS_FILE
    try:
        with np.load(cached) as saved:
            gray, target = saved["images"], saved["target"]
        if gray.shape == (1797, 8, 8) and gray.dtype == np.uint8 and target.shape == (1797,):
            return gray, target.astype(np.int64)
    except Exception:  # missing, damaged or foreign: rebuilt from scikit-learn
        pass
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    target = digits.target.astype(np.int64)
    try:
        with atomic_path(cached) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, images=gray, target=target)
    except OSError:  # a read-only cache dir: scikit-learn again next time
        pass
    return gray, target


def digits_source() -> ArraySource:
    """scikit-learn's 1,797 real 8x8 handwritten digits as RGB uint8 (no network needed)."""
    from toolbox.images import as_rgb_uint8

    gray, target = _digits_arrays()
    images = np.stack([as_rgb_uint8(img) for img in gray])
    return ArraySource(images, target, [str(d) for d in range(10)])


def splits_for(cfg: Any) -> DataSplits:
    """The splits a run's settings (`FinetuneConfig`) describe."""
    return load_splits(data=cfg.data, dataset=cfg.dataset, root=cfg.root,
                       val_split=cfg.val_split, seed=cfg.seed, labels=cfg.labels,
                       path_column=cfg.path_column, label_column=cfg.label_column,
                       split_column=cfg.split_column, val_data=cfg.val_data)


def load_splits(*, data: str | Path | None, dataset: str | None, root: str | Path | None,
                val_split: float, seed: int, labels: str | Path | None = None,
                path_column: str | None = None, label_column: str | None = None,
                split_column: str | None = None, val_data: str | Path | None = None
                ) -> DataSplits:
    """Find the training and validation data the options describe: a folder, a CSV table
    (`data` itself, or `labels` with paths relative to the folder `data`), tar shards, a
    fetched data set or the demo digits; `val_data` names separate validation data.

    Raises:
        ToolboxError: missing folder or data set, fewer than two classes, an empty class folder,
            class folders that differ between train/ and val/.
    """
    from toolbox.train import table_splits

    if data is not None and table_splits.is_table(data, labels, val_data):
        parts = table_splits.table_parts(
            data=data, labels=labels, path_column=path_column, label_column=label_column,
            split_column=split_column, val_data=val_data, readable_rows=readable_rows)
        if parts.val is None:  # a table without a split: stratified, as a plain folder
            train_idx, val_idx = stratified_split(parts.train.targets, val_split, seed)
            parts.val = SubsetSource(parts.train, val_idx)
            parts.train = SubsetSource(parts.train, train_idx)
            parts.description += f" (stratified {val_split:g} validation split, seed {seed})"
        splits = DataSplits(parts.train, parts.val, parts.classes, parts.description,
                            skipped=parts.skipped)
        _check_classes(splits.classes, splits.description)
        if len(splits.train) == 0 or len(splits.val) == 0:
            raise ToolboxError(f"{splits.description}: the training or validation split is "
                               "empty", "give both splits images")
        return splits
    if val_data is not None:
        raise UsageError("--val-data needs --data (a folder, a CSV or shards)",
                         param="--val-data")
    if data is not None:
        data = Path(data)
        if not data.is_dir():
            raise ToolboxError(f"no such data folder: {data}",
                               "pass an ImageFolder tree: DIR/<class>/<image>")
        train_dir, held_out_dir = runs.split_folders(data)
        if held_out_dir is not None:
            train = image_folder_source(train_dir, data)
            val = image_folder_source(held_out_dir, data)
            if train.classes != val.classes:
                only = sorted(set(train.classes) ^ set(val.classes))
                raise ToolboxError(f"{train_dir} and {held_out_dir} have different class "
                                   f"folders ({', '.join(only[:5])})",
                                   "give both the same class sub-folders")
            splits = DataSplits(train, val, train.classes,
                                f"{data} (train/ and {held_out_dir.name}/)")
        else:
            full, skipped = _readable_only(image_folder_source(train_dir, data))
            _check_classes(full.classes, str(train_dir))
            train_idx, val_idx = stratified_split(full.targets, val_split, seed)
            splits = DataSplits(SubsetSource(full, train_idx), SubsetSource(full, val_idx),
                                full.classes, f"{train_dir} (stratified {val_split:g} "
                                              f"validation split, seed {seed})",
                                skipped=skipped)
    elif dataset is not None:
        import toolbox.datasets as datasets_mod

        if root is None:
            root = datasets_mod.default_root()
        open_dataset = datasets_mod.open_dataset
        train = FetchedSource(open_dataset(dataset, Path(root), "train"))
        val = FetchedSource(open_dataset(dataset, Path(root), "test"))
        splits = DataSplits(train, val, train.classes,
                            f"data set {dataset} from {root} (official train/test split)")
    else:
        full = digits_source()
        train_idx, val_idx = stratified_split(full.targets, val_split, seed)
        splits = DataSplits(SubsetSource(full, train_idx), SubsetSource(full, val_idx),
                            full.classes, f"built-in demo data: {DEMO_NAME} (1,797 8x8 images, "
                                          f"10 classes, {val_split:g} validation split)",
                            is_demo=True, default_img_size=DEMO_IMG_SIZE)
    _check_classes(splits.classes, splits.description)
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise ToolboxError(f"{splits.description}: the training or validation split is empty",
                           "add images (each class needs at least two) or change --val-split")
    return splits


def _readable_only(source: FileSource) -> tuple[FileSource, list[SkippedFile]]:
    """The files of `source` that open as images, and the ones that do not."""
    readable, skipped, _ = readable_rows(source)
    return readable, skipped


def readable_rows(source: FileSource) -> tuple[FileSource, list[SkippedFile], np.ndarray]:
    """The files of `source` that open as images, and the ones that do not.

    Run before a split is drawn, so that no class ends up with only unreadable validation
    images (probing reads headers only; threads, as the files are read from disk).
    """
    from toolbox.images import probe_image

    with ThreadPoolExecutor(8) as pool:
        reasons = list(pool.map(probe_image, source.paths, chunksize=64))
    keep = [i for i, reason in enumerate(reasons) if reason is None]
    if len(keep) == len(source.paths):
        return source, [], np.arange(len(keep))
    skipped = [SkippedFile(source.describe(i), reason) for i, reason in enumerate(reasons)
               if reason is not None]
    return (FileSource([source.paths[i] for i in keep], source.targets[keep], source.classes,
                       source.root, source.not_images), skipped, np.asarray(keep, dtype=np.int64))


def _check_classes(classes: Sequence[str], where: str) -> None:
    if len(classes) < 2:
        raise ToolboxError(f"{where} has {len(classes)} class; classification needs at least two",
                           "add a sub-folder per class: DIR/<class>/<image>")
