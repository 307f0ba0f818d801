"""Helpers for the segmentation tests: a small real segmentation folder from Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path

from conftest import FASHION_MNIST_DIR


def fashion_segmentation(dest: Path, *, root: Path, count: int = 48, binary: bool = True,
                         size: int = 32) -> Path:
    """`tb datasets fetch fashion-mnist --export-segmentation` through the service: `count`
    training and count/4 validation canvases of real garments (one per canvas fits 32 px)."""
    from toolbox.datasets._fetch import fetch_dataset

    fetch_dataset(name="fashion-mnist", root=root, from_dir=FASHION_MNIST_DIR,
                  export_segmentation=dest, export_max=count, binary=binary, canvas_size=size)
    return dest
