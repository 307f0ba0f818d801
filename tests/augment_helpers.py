"""Small real images and awkward inputs for the `tb augment` tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def photo(name: str = "astronaut", size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A scikit-image sample photo, downscaled to `size` (H, W), as uint8 RGB."""
    from PIL import Image
    from skimage import data

    image = Image.fromarray(getattr(data, name)())
    return np.asarray(image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_class_folder(root: Path, per_class: int = 2) -> list[Path]:
    """root/cat/*.png and root/dog/*.jpg from real photos (class folders, two formats)."""
    from PIL import Image

    paths = []
    for index in range(per_class * 2):
        name = PHOTOS[index % len(PHOTOS)]
        cls, ext = ("cat", ".png") if index % 2 == 0 else ("dog", ".jpg")
        path = root / cls / f"{name}{index}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(name)).save(path, quality=95)
        paths.append(path)
    return paths


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path (to prove inputs are unchanged)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def output_files(root: Path, suffixes: tuple[str, ...] = (".png", ".jpg", ".webp")
                 ) -> dict[str, bytes]:
    """Bytes of every image file under root, by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in suffixes}
