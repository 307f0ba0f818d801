"""Helpers for the `tb finetune` tests: real image data on disk and TensorBoard read-back."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "boot"]


def read_fashion_mnist(folder: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Debian's Fashion-MNIST idx files (gzip) -> (N, 28, 28) uint8 images, (N,) labels."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "rb") as handle:
        raw = handle.read()
    count, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "rb") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8).astype(np.int64)
    return images, labels


def pick(images: np.ndarray, labels: np.ndarray, classes: list[int], per_class: int
         ) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` images of each of `classes`."""
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in classes])
    return images[keep], labels[keep]


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray,
                       names: dict[int, str], ext: str = ".png") -> Path:
    """Write an ImageFolder tree root/<class name>/<n>.png (grayscale kept as it is)."""
    from toolbox.images import write_image

    for n, (image, label) in enumerate(zip(images, labels, strict=True)):
        write_image(root / names[int(label)] / f"{n:05d}{ext}", image)
    return root


def digits_folder(root: Path, per_class: int = 12, classes: int = 3) -> Path:
    """A small ImageFolder of real scikit-learn digits (8x8, upscaled to 16x16 PNGs)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.round(digits.images * 255 / 16), 0, 255).astype(np.uint8)
    images = images.repeat(2, axis=1).repeat(2, axis=2)
    imgs, labels = pick(images, digits.target, list(range(classes)), per_class)
    return write_image_folder(root, imgs, labels, {c: f"digit{c}" for c in range(classes)})


def read_events(run_dir: Path):
    """An EventAccumulator over every event file of the run folder, everything loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0,
                                                        "tensors": 0})
    acc.Reload()
    return acc


# A tiny classifier for CLI runs that train on `digits_folder` data in seconds.
TINY_ARGS = ["--model", "test_resnet", "--img-size", "16", "--no-pretrained", "--batch-size", "8",
             "--workers", "0"]


def flat(text: str) -> str:
    """An error shown in Typer's usage box, as one line (box borders and wrapping dropped)."""
    return " ".join(text.replace("│", " ").split())
