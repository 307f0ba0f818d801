"""Open a fetched data set through its torchvision class (download=False) as RGB uint8 samples."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolbox.datasets._pet import default_segmentation_dir
from toolbox.datasets._registry import SEGMENTATION_LOADERS, DatasetInfo, get_dataset
from toolbox.datasets._verify import check_dataset
from toolbox.errors import ToolboxError
from toolbox.images import as_rgb_uint8

if TYPE_CHECKING:
    from torch.utils.data import Dataset

SPLITS = ("train", "test")
ROOT_ENV = "TB_DATASETS_ROOT"


def default_root() -> Path:
    """Where data sets live when no --root is given: `$TB_DATASETS_ROOT`, else the cache dir."""
    import os

    from toolbox.paths import cache_dir

    override = os.environ.get(ROOT_ENV)
    return Path(override) if override else cache_dir() / "datasets"


def fetch_command(name: str, root: Path) -> str:
    """The exact command that fetches `name` into `root`."""
    import shlex

    return f"tb datasets fetch {name} --root {shlex.quote(str(root))}"


def _torchvision_dataset(info: DatasetInfo, root: Path, train: bool) -> Dataset:
    """The torchvision class for `info`, reading the files under `root` with download=False.

    The files were verified against the registry before this is called, so the subclasses only
    point torchvision at the entry's folder and leave its (repeated) MD5 checks out.
    """
    from torchvision import datasets as tvd

    folder = info.folder
    if info.loader in ("cifar10", "cifar100"):
        base = tvd.CIFAR10 if info.loader == "cifar10" else tvd.CIFAR100
        cls: Any = type(f"Tb{base.__name__}", (base,), {
            "base_folder": folder,
            "train_list": [[name, None] for name, _ in base.train_list],
            "test_list": [[name, None] for name, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        })
        return cls(str(root), train=train, download=False)
    if info.loader == "mnist":
        raw = str(Path(root) / folder / "raw")
        cls = type("TbMNIST", (tvd.MNIST,), {
            "raw_folder": property(lambda self: raw),
            "classes": list(info.classes),
        })
        return cls(str(root), train=train, download=False)
    if info.loader == "svhn":
        cls = type("TbSVHN", (tvd.SVHN,), {
            "split_list": {k: [u, f, None] for k, (u, f, _) in tvd.SVHN.split_list.items()},
        })
        return cls(str(Path(root) / folder), split="train" if train else "test", download=False)
    raise ToolboxError(f"data set '{info.name}' has unknown loader '{info.loader}'")


class FetchedDataset:
    """A fetched data set split: `classes`, `len()`, and `[i] -> ((H, W, 3) uint8, label)`."""

    def __init__(self, info: DatasetInfo, root: Path, split: str, tv_dataset: Any) -> None:
        self.info = info
        self.root = Path(root)
        self.split = split
        self.torchvision_dataset = tv_dataset
        data = tv_dataset.data
        self._data = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
        targets = getattr(tv_dataset, "targets", None)
        if targets is None:
            targets = tv_dataset.labels  # SVHN
        self._targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        # SVHN keeps (N, 3, H, W); CIFAR (N, H, W, 3); the MNIST family (N, H, W).
        self._chw = info.loader == "svhn"
        classes = getattr(tv_dataset, "classes", None)
        self.classes: list[str] = list(classes) if classes else list(info.classes)

    def __len__(self) -> int:
        return len(self._targets)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        image = self._data[index]
        if self._chw:
            image = np.transpose(image, (1, 2, 0))
        return as_rgb_uint8(np.asarray(image)), int(self._targets[index])

    @property
    def targets(self) -> np.ndarray:
        """All labels as an int64 array (no image decoding needed)."""
        return self._targets


def open_dataset(name: str, root: str | Path, split: str = "train") -> FetchedDataset:
    """Open a fetched data set's `split` ("train" or "test") from `root`.

    Raises:
        ToolboxError: unknown name (with close matches), bad split, or files missing or failing
            verification (the hint is the exact `tb datasets fetch` command).
    """
    info = get_dataset(name)
    root = Path(root)
    if info.loader in SEGMENTATION_LOADERS:
        raise ToolboxError(f"'{name}' is a segmentation data set: a fetch builds it as a folder",
                           f"{fetch_command(name, root)}, then tb finetune --task segment "
                           f"--data {default_segmentation_dir(info, Path(root))}")
    if split not in SPLITS:
        raise ToolboxError(f"unknown split '{split}' for data set '{name}'",
                           "use split 'train' or 'test'")
    status = check_dataset(info, root)
    if not status.present:
        detail = {"missing": "is not fetched", "incomplete": "is incomplete",
                  "corrupt": "has files that fail their checksum",
                  "unverified": "has files that were never verified"}[status.state]
        first = (status.missing or status.corrupt or status.unverified)[:1]
        where = f" ({root / first[0]})" if first and status.state != "missing" else ""
        raise ToolboxError(f"data set '{name}' under {root} {detail}{where}",
                           fetch_command(name, root))
    try:
        tv_dataset = _torchvision_dataset(info, root, train=split == "train")
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise ToolboxError(f"torchvision could not load '{name}' from {root}: {exc}",
                           fetch_command(name, root)) from exc
    return FetchedDataset(info, root, split, tv_dataset)
