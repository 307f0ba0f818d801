"""Where images come from, written once for every command: labelled sources (folders, fetched
data sets, arrays, subsets), plain index-to-image readers, and how a skipped file looks.

Every image crosses this module as an (H, W, 3) uint8 array read by `toolbox.images`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from toolbox.images import not_an_image, read_image, scan_image_folder


@dataclass(frozen=True)
class SkippedFile:
    """An input that was left out, and why (`path` as `shown_path` writes it)."""

    path: str
    reason: str


def skipped_json(skipped: Iterable[SkippedFile]) -> list[dict[str, str]]:
    """Skipped files as `tb predict` and `tb evaluate` print and save them: `path` and `reason`,
    as every command names them, and `file`, the key those two commands have always had."""
    return [{"file": item.path, "path": item.path, "reason": item.reason} for item in skipped]


def shown_path(path: Path, root: Path | None) -> str:
    """How messages name `path`: relative to the folder the user named (`root`), in POSIX form;
    as given when there is no such folder or it lies elsewhere."""
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


class Source(Protocol):
    """Indexable images with integer labels."""

    classes: list[str]
    targets: np.ndarray

    def __len__(self) -> int: ...

    def load(self, index: int) -> np.ndarray: ...

    def describe(self, index: int) -> str: ...


@dataclass
class FileSource:
    """Image files on disk (an ImageFolder tree under `root`)."""

    paths: list[Path]
    targets: np.ndarray
    classes: list[str]
    root: Path | None = None  # the folder the user named: messages show paths below it
    not_images: list[SkippedFile] = field(default_factory=list)  # other files found there

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> np.ndarray:
        return read_image(self.paths[index])

    def describe(self, index: int) -> str:
        return shown_path(self.paths[index], self.root)


@dataclass
class ArraySource:
    """Images already in memory (the demo digits)."""

    images: np.ndarray  # (N, H, W, 3) uint8
    targets: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> np.ndarray:
        return self.images[index]

    def describe(self, index: int) -> str:
        return f"sample {index}"


@dataclass
class FetchedSource:
    """A split of a data set opened with `toolbox.datasets.open_dataset`."""

    dataset: Any
    classes: list[str] = field(init=False)
    targets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.classes = list(self.dataset.classes)
        self.targets = np.asarray(self.dataset.targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> np.ndarray:
        return self.dataset[index][0]

    def describe(self, index: int) -> str:
        return f"sample {index}"


@dataclass
class SubsetSource:
    """Some samples of another source (a split)."""

    base: Any
    indices: np.ndarray
    classes: list[str] = field(init=False)
    targets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.classes = self.base.classes
        self.targets = np.asarray(self.base.targets)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> np.ndarray:
        return self.base.load(int(self.indices[index]))

    def describe(self, index: int) -> str:
        return self.base.describe(int(self.indices[index]))


def image_folder_source(folder: Path, root: Path | None = None) -> FileSource:
    """An ImageFolder tree `folder/<class>/<image>` as a labelled source; messages name its
    files relative to `root` (the folder the user named; `folder` itself by default)."""
    tree = scan_image_folder(folder)
    paths = [path for path, _ in tree.samples]
    targets = np.asarray([label for _, label in tree.samples], dtype=np.int64)
    shown = Path(root or folder).resolve()
    return FileSource(paths, targets, tree.classes, shown,
                      [SkippedFile(shown_path(p, shown), not_an_image(p)) for p in tree.others])


# ---- plain readers (index -> image), for inference over files, data sets and subsets ----------

class FileReader:
    """index -> image of `paths[index]`. A class, not a closure, so loader workers started by
    spawn or forkserver (macOS, newer Pythons) can receive it."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __call__(self, index: int) -> np.ndarray:
        return read_image(self.paths[index])


class DatasetReader:
    """index -> image of a fetched data set's sample (its label is looked up separately)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __call__(self, index: int) -> np.ndarray:
        return self.dataset[index][0]


class PickedReader:
    """index -> image `picks[index]` of another reader (a subset)."""

    def __init__(self, reader: Callable[[int], np.ndarray], picks: Sequence[int]) -> None:
        self.reader, self.picks = reader, list(picks)

    def __call__(self, index: int) -> np.ndarray:
        return self.reader(self.picks[index])
