"""The one image reader and writer every command shares (augment, finetune, log-images, predict).

Channel handling, the same everywhere:
- EXIF orientation is applied, so photos come out the right way up;
- grayscale is replicated to three channels; palette images are expanded through their palette;
- an alpha channel is dropped (as PIL's ``convert("RGB")`` and torchvision do);
- 16-bit images are scaled to 8 bits (``value // 257``), floats in [0, 1] to [0, 255].
The result is always a C-contiguous ``uint8`` array of shape (H, W, 3).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolbox.errors import ToolboxError
from toolbox.fileio import atomic_path

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
LOSSY_FORMATS = frozenset({".jpg", ".jpeg", ".webp"})


class ImageReadError(ToolboxError):
    """A file could not be read as an image; `reason` is short enough for a skip table."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ImageFile:
    """An input image: its absolute path and its path relative to the source root."""

    path: Path
    relative: Path


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def is_glob(src: str | Path) -> bool:
    """Whether `src` is a glob pattern rather than a path."""
    return any(ch in str(src) for ch in "*?[")


def source_root(src: str | Path) -> Path:
    """The folder that relative paths of `src`'s images start from: the folder itself, a file's
    parent, or a glob's fixed part before its first wildcard (`imgs/**/*.png` -> `imgs`)."""
    path = Path(src)
    if is_glob(src):
        fixed = []
        for part in path.parts:
            if is_glob(part):
                break
            fixed.append(part)
        return Path(*fixed) if fixed else Path(".")
    return path.parent if path.is_file() else path


def collect_images(src: str | Path, others: list[ImageFile] | None = None) -> list[ImageFile]:
    """Image files under `src` (a folder, searched recursively; a file; or a glob), sorted.

    Relative paths start at `source_root(src)`, so outputs can mirror the input's sub-folders.
    Hidden files and folders are skipped: they are where atomic writes keep their temporary
    files. Other files (notes.txt) are not images; pass `others` to receive them, so that a
    command can report each one (see `not_an_image`) instead of leaving it out without a word.
    """
    path = Path(src)
    root = source_root(src)
    if is_glob(src):
        # Relative to the unresolved root: a match may be a link that resolves elsewhere.
        candidates = [Path(p) for p in glob.glob(str(src), recursive=True)]
    elif path.is_dir():
        candidates = list(path.rglob("*"))
    elif path.is_file():
        candidates = [path]
    else:
        raise ToolboxError(f"no such file or folder: {src}", "check the path, or quote a glob")
    files = sorted((f for f in (ImageFile(p.resolve(), p.relative_to(root))
                                for p in candidates if p.is_file())
                    if not _is_hidden(f.relative)), key=lambda f: f.relative)
    if others is not None:
        others.extend(f for f in files if f.relative.suffix.lower() not in IMAGE_EXTENSIONS)
    return [f for f in files if f.relative.suffix.lower() in IMAGE_EXTENSIONS]


def not_an_image(path: str | Path) -> str:
    """The reason a file found among the inputs was not used."""
    suffix = Path(path).suffix
    return f"not an image file ({suffix or 'no extension'})"


def as_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Any decoded image array -> (H, W, 3) uint8 by the module's channel rules."""
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if array.size and float(np.nanmax(array)) <= 1.0 else 1.0
        array = np.clip(np.nan_to_num(array) * scale, 0, 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 2:  # grayscale + alpha
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] >= 4:
        array = array[:, :, :3]
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"unsupported image shape {array.shape}")
    return np.ascontiguousarray(array)


def read_image(path: str | Path) -> np.ndarray:
    """Read `path` as an (H, W, 3) uint8 RGB array (see the module docstring for the rules).

    Raises:
        ImageReadError: the file is empty, truncated, or not an image.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(path, "empty file")
    except FileNotFoundError as exc:
        raise ImageReadError(path, "file not found") from exc
    return _decode(path, path)


def read_image_bytes(data: bytes, name: str) -> np.ndarray:
    """An image file's bytes (a tar shard's member) as `read_image` reads the file; errors
    name it `name` (shard and key)."""
    if not data:
        raise ImageReadError(Path(name), "empty file")
    return _decode(data, Path(name))


def _decode(src: Path | bytes, name: Path) -> np.ndarray:
    import io

    try:
        plain = _read_plain(io.BytesIO(src) if isinstance(src, bytes) else src)
        if plain is not None:
            return as_rgb_uint8(plain)
        import imageio.v3 as iio  # only here: each training worker would import it

        # rotate=True applies the EXIF orientation; the palette is applied by the plugin.
        # index=0: the first frame of an animated GIF or multi-page TIFF (without it a GIF
        # comes back as a (frames, H, W, 3) stack).
        array = iio.imread(src, plugin="pillow", rotate=True, index=0)
        return as_rgb_uint8(np.asarray(array))
    except (ImageReadError, ImportError):  # a broken install is no property of the file
        raise
    except FileNotFoundError as exc:
        raise ImageReadError(name, "file not found") from exc
    except OSError as exc:
        reason = "truncated file" if "truncated" in str(exc).lower() else "not an image"
        raise ImageReadError(name, reason) from exc
    except Exception as exc:  # imageio/PIL raise many types for undecodable bytes
        raise ImageReadError(name, f"not an image ({type(exc).__name__})") from exc


# Modes that imageio's pillow plugin hands to numpy unchanged (it converts palette and 32-bit
# PNG images), and the EXIF tag it rotates by.
_PLAIN_MODES = frozenset({"L", "LA", "RGB", "RGBA"})
_EXIF_ORIENTATION = 0x0112


def _read_plain(path: Any) -> np.ndarray | None:
    """The common image (8-bit gray or RGB, upright) read with Pillow alone, or None.

    Gives the very array imageio gives for these files at a third of the CPU time (0.12 against
    0.35 ms for a small PNG: imageio builds a plugin per file, whose optional-format imports
    search sys.path every time); that decoding runs once per image and epoch in the training
    workers. Anything else, and every failure, goes through imageio and its messages.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            if (image.mode not in _PLAIN_MODES
                    or image.getexif().get(_EXIF_ORIENTATION, 1) != 1):
                return None
            return np.array(image)
    except Exception:  # imageio reads it again and names the problem
        return None


def probe_image(path: str | Path) -> str | None:
    """Why `path` cannot be read as an image (empty, not an image, a truncated PNG), or None.

    Reads the header and checks what Pillow's `verify` checks, without decoding the pixels:
    cheap enough to run over a whole folder before splitting it.
    """
    from PIL import Image

    try:
        if Path(path).stat().st_size == 0:
            return "empty file"
        with Image.open(path) as image:
            image.verify()
    except FileNotFoundError:
        return "file not found"
    except Exception as exc:  # PIL raises many types for undecodable bytes
        return "truncated file" if "truncated" in str(exc).lower() else "not an image"
    return None


def read_mask(path: str | Path) -> np.ndarray:
    """Read a segmentation mask as an (H, W) integer array of class ids (palette indices kept)."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I", "I;16", "1"):
                raise ImageReadError(path, f"mask must be single-channel, got mode {img.mode}")
            array = np.asarray(img)
    except ImageReadError:
        raise
    except Exception as exc:  # PIL raises many types for undecodable bytes (and image bombs)
        raise ImageReadError(path, f"not a mask image ({type(exc).__name__})") from exc
    return array.astype(np.int32)


def write_image(dest: str | Path, array: np.ndarray, quality: int | None = None) -> Path:
    """Write an image atomically; the format follows `dest`'s extension.

    `quality` (1-100) applies to lossy formats (JPEG, WebP) and is ignored otherwise.
    """
    import imageio.v3 as iio

    dest = Path(dest)
    with atomic_path(dest) as tmp:
        iio.imwrite(tmp, np.ascontiguousarray(array), plugin="pillow",
                    **_quality(dest.suffix, quality))
    return dest


def _quality(suffix: str, quality: int | None) -> dict[str, int]:
    return {"quality": int(quality)} if quality is not None and suffix.lower() in \
        LOSSY_FORMATS else {}


def encode_image(array: np.ndarray, suffix: str, quality: int | None = None) -> bytes:
    """An image file's bytes in the format of `suffix` (".png", ".jpg", ...), encoded as
    `write_image` encodes a file (a tar shard's member)."""
    import imageio.v3 as iio

    suffix = "." + suffix.lower().lstrip(".")
    return iio.imwrite("<bytes>", np.ascontiguousarray(array), extension=suffix,
                       plugin="pillow", **_quality(suffix, quality))


@dataclass(frozen=True)
class FolderDataset:
    """An ImageFolder-style tree: one sub-folder per class, images anywhere below it."""

    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]  # (image path, class index)
    others: tuple[Path, ...] = ()  # files in the class folders that are not images


def scan_image_folder(root: str | Path) -> FolderDataset:
    """Classes (sorted sub-folder names) and samples of an ImageFolder tree.

    Raises:
        ToolboxError: the folder is missing, has no class folders, or a class folder is empty.
    """
    root = Path(root)
    if not root.is_dir():
        raise ToolboxError(f"no such data folder: {root}", "pass a folder of class sub-folders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ToolboxError(f"{root} has no class sub-folders",
                           "lay images out as DIR/<class>/<image>, one folder per class")
    samples: list[tuple[Path, int]] = []
    others: list[ImageFile] = []
    for index, name in enumerate(classes):
        files = collect_images(root / name, others)
        if not files:
            raise ToolboxError(f"class folder {root / name} holds no images",
                               "remove the empty folder or add images to it")
        samples.extend((f.path, index) for f in files)
    return FolderDataset(root, classes, samples, tuple(o.path for o in others))
