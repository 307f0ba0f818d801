"""Training data named by a table or held in shards: a CSV of paths and labels (`--data
labels.csv`, or `--labels FILE` beside `--data IMAGES_DIR`), WebDataset tar shards, and
validation data of its own (`--val-data`, or a CSV's `--split-column`).

`train.splits` turns these parts into a run's `DataSplits` (drawing a stratified split when
nothing names the validation data); it hands in its own header probe (`readable_rows`), so
unreadable files are left out before any split, as for a folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolbox import runs
from toolbox.csv_source import is_csv, read_csv_labels
from toolbox.errors import ToolboxError, UsageError
from toolbox.paths import is_remote
from toolbox.sources import FileSource, SkippedFile, SubsetSource, image_folder_source


@dataclass
class Parts:
    """A run's training data, its validation data (None: split off the training data) and
    what was left out."""

    train: Any
    val: Any | None
    classes: list[str]
    description: str
    skipped: list[SkippedFile] = field(default_factory=list)


def _shards(data: str | Path) -> bool:
    from toolbox.datasets import looks_like_shards

    return looks_like_shards(data)


def is_table(data: str | Path, labels: str | Path | None, val_data: str | Path | None) -> bool:
    """Whether the data options name something other than a plain folder."""
    return labels is not None or val_data is not None or is_csv(data) or _shards(data)


def _aligned(source: FileSource, classes: list[str], where: str) -> FileSource:
    """`source` with its labels numbered as the training data's `classes` (a validation table
    may lack some classes; it may not add any)."""
    if source.classes == classes:
        return source
    extra = sorted(set(source.classes) - set(classes))
    if extra:
        raise ToolboxError(f"{where} has classes the training data lacks: {', '.join(extra[:5])}",
                           "validate on the classes the model learns")
    index = {name: i for i, name in enumerate(classes)}
    targets = np.asarray([index[source.classes[t]] for t in source.targets], dtype=np.int64)
    return FileSource(source.paths, targets, classes, source.root, source.not_images)


def _shard_parts(data: str | Path, val_data: str | Path | None) -> Parts:
    from toolbox.datasets import open_shards

    train = open_shards(str(data))
    if val_data is not None:
        val = open_shards(str(val_data))
    else:
        first = train.urls[0]
        folder = Path(first).parent
        if is_remote(first) or not any(folder.glob("val-*.tar")):
            raise ToolboxError(f"no validation shards for {data}",
                               "pass --val-data 'PATTERN' (pack a folder with val/, or a CSV "
                               "with --split-column, to get val-*.tar beside train-*.tar)")
        val = open_shards(str(folder / "val-*.tar"))
    if val.classes != train.classes:
        raise ToolboxError(f"the validation shards ({val.pattern}) name other classes than "
                           f"the training shards ({train.pattern})",
                           "pack both splits from one source")
    return Parts(train, val, train.classes,
                 f"shards {train.describe()}; validation {val.describe()}")


def _val_source(val_data: str | Path, classes: list[str], path_column: str | None,
                label_column: str | None) -> FileSource:
    if is_csv(val_data):
        table = read_csv_labels(val_data, path_column=path_column, label_column=label_column)
        return _aligned(table.source, classes, str(val_data))
    folder = Path(val_data)
    if not os.path.isdir(folder):
        raise ToolboxError(f"no such validation folder or CSV: {val_data}",
                           "--val-data takes DIR/<class>/<image>, a CSV or shards")
    return _aligned(image_folder_source(folder), classes, str(val_data))


def table_parts(*, data: str | Path, labels: str | Path | None, path_column: str | None,
                label_column: str | None, split_column: str | None,
                val_data: str | Path | None,
                readable_rows: Callable[[FileSource], tuple[FileSource, list[SkippedFile],
                                                            np.ndarray]]) -> Parts:
    """The parts of a CSV-, shard- or `--val-data`-described run.

    Raises:
        ToolboxError: see `read_csv_labels` and `open_shards`; validation classes unknown to
            the training data.
        UsageError: options that do not go together.
    """
    table_flags = [f for f, v in (("--labels", labels), ("--path-column", path_column),
                                  ("--label-column", label_column),
                                  ("--split-column", split_column)) if v is not None]
    if labels is None and _shards(data):
        if table_flags:
            raise UsageError(f"{table_flags[0]} applies to a CSV, not to shards",
                             "shards carry their labels (cls)", param=table_flags[0])
        return _shard_parts(data, val_data)
    if val_data is not None and _shards(val_data):
        raise UsageError("--val-data shards need --data shards too", param="--val-data")
    skipped: list[SkippedFile] = []
    if labels is not None or is_csv(data):
        if labels is not None and not os.path.isdir(Path(data)):
            raise UsageError(f"--labels needs --data IMAGES_DIR (a folder), not {data}",
                             param="--labels")
        csv_file = Path(labels if labels is not None else data)
        table = read_csv_labels(csv_file, images_dir=data if labels is not None else None,
                                path_column=path_column, label_column=label_column,
                                split_column=split_column)
        full, unreadable, keep = readable_rows(table.source)
        skipped = table.skipped + unreadable
        description = f"{csv_file} (paths {table.path_column!r}, labels {table.label_column!r}"
        if table.is_val is not None:
            if val_data is not None:
                raise UsageError("--split-column and --val-data both name the validation data",
                                 "drop one of them", param="--val-data")
            is_val = table.is_val[keep]
            return Parts(SubsetSource(full, np.flatnonzero(~is_val)),
                         SubsetSource(full, np.flatnonzero(is_val)), full.classes,
                         description + f", split by {split_column!r})",
                         skipped)
        description += ")"
    else:
        if table_flags:
            raise UsageError(f"{table_flags[0]} applies to a CSV table",
                             "pass --data labels.csv, or --labels FILE with --data IMAGES_DIR",
                             param=table_flags[0])
        if not os.path.isdir(Path(data)):
            raise ToolboxError(f"no such data folder: {data}",
                               "pass an ImageFolder tree: DIR/<class>/<image>")
        train_dir, _ = runs.split_folders(data)
        full, skipped, _ = readable_rows(image_folder_source(train_dir, Path(data)))
        description = str(train_dir)
    if val_data is None:
        return Parts(full, None, full.classes, description, skipped)
    val = _val_source(val_data, full.classes, path_column, label_column)
    return Parts(full, val, full.classes, f"{description}; validation {val_data}", skipped)
