"""Small generated data for the CSV and shard tests: a class-folder tree of random PNGs, the
same images listed in a CSV, and shards packed from them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CLASSES = ("cat", "dog", "eel")


def image_tree(root: Path, per_class: int = 8, val_per_class: int = 0, size: int = 12,
               seed: int = 0) -> Path:
    """root/[train|val/]<class>/<n>.png: distinct random images (val/ only with
    `val_per_class`)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    splits = [("train", per_class), ("val", val_per_class)] if val_per_class else [("", per_class)]
    for split, count in splits:
        for name in CLASSES:
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{n:03d}.png")
    return root


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def tree_rows(root: Path, prefix: str = "") -> list[dict[str, str]]:
    """A CSV row (`image`, `label`) per PNG under `root`, paths relative to root (after
    `prefix`)."""
    return [{"image": prefix + p.relative_to(root).as_posix(), "label": p.parent.name}
            for p in sorted(root.rglob("*.png"))]


def shard_keys(urls: list[str]) -> list[str]:
    """Every `__key__` in the tar shards `urls`, read with tarfile alone (the ground truth)."""
    import tarfile

    keys = []
    for url in urls:
        with tarfile.open(url) as tar:
            keys += sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})
    return keys
