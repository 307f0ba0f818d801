"""What determines a frozen backbone's features, written as keys for the feature cache.

A feature set is named by what its numbers depend on: the model (name, options, a digest of the
backbone's weights and buffers), the input geometry and preprocessing (size, resize mode,
interpolation, crop, mean and std), the precision it was computed in and the cache-format
version. Inside a set, each image is named by its content: a file by its resolved path, size and
modification time; an in-memory image (the demo digits) by a hash of its pixels; a fetched data
set's sample by the data set, split and index (`tb datasets fetch` verifies those files).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolbox.models import ModelMeta
from toolbox.sources import ArraySource, FetchedSource, FileSource, SubsetSource
from toolbox.train.modeling import is_head

# Raised whenever the file layout or what a feature means changes: old sets are never read.
FORMAT_VERSION = 1
KEY_BYTES = 16  # one image's key: a 128-bit BLAKE2b digest


def _digest(*parts: bytes | str) -> bytes:
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    for part in parts:
        h.update(part.encode("utf-8") if isinstance(part, str) else part)
        h.update(b"\0")
    return h.digest()


def weights_digest(model: Any, head: str) -> str:
    """A digest of every backbone tensor (weights and buffers, the head left out): the same
    pretrained file, `--weights` or random seed gives the same digest, anything else another.
    About 20 ms for the 13 MB of tf_efficientnet_lite0."""
    import torch

    h = hashlib.blake2b(digest_size=KEY_BYTES)
    for name, tensor in model.state_dict().items():
        if is_head(name, head):
            continue
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(dtype=torch.uint8).numpy())
    return h.hexdigest()


def model_key(meta: ModelMeta, digest: str, precision: str, split: str) -> str:
    """The folder name of one feature set (hex): everything a feature depends on but the image."""
    fields = {"format": FORMAT_VERSION, "model": meta.model, "kwargs": meta.model_kwargs,
              "weights": digest, "input_size": list(meta.input_size), "mean": list(meta.mean),
              "std": list(meta.std), "interpolation": meta.interpolation,
              "crop_pct": meta.crop_pct, "resize": meta.resize, "precision": precision,
              "split": split}
    return _digest(json.dumps(fields, sort_keys=True, default=str)).hex()


@dataclass
class ImageKeys:
    """One split's images as keys: `keys[i]` names sample i of the split; `base` names the data
    set they belong to, and `live` holds the keys of every image it has now (what a rewrite of
    the cache keeps; the rest, images since removed or changed, is dropped)."""

    base: str
    keys: list[bytes]
    live: set[bytes]


def _file_key(path: Path) -> bytes:
    try:
        stat = path.stat()
    except OSError:  # gone since the scan: never found in the cache, so it is decoded and skipped
        return _digest("missing", str(path))
    return _digest(str(path.resolve()), str(stat.st_size), str(stat.st_mtime_ns))


def _base_keys(source: Any) -> tuple[str, list[bytes]] | None:
    """(the data set's name, a key per image) for a source that is not a subset; None when its
    images cannot be told apart without decoding them."""
    if isinstance(source, FileSource):
        keys = [_file_key(Path(p)) for p in source.paths]
        where = os.path.commonpath([str(Path(p).resolve().parent) for p in source.paths]) \
            if source.paths else ""
        return "files:" + where, keys
    if isinstance(source, ArraySource):
        images = np.ascontiguousarray(source.images)
        keys = [_digest(str(img.shape), img.tobytes()) for img in images]
        return "array:" + _digest(str(images.shape), images.tobytes()).hex(), keys
    if isinstance(source, FetchedSource):
        data = source.dataset
        name = f"fetched:{data.info.name}:{data.split}:{Path(data.root).resolve()}"
        return name, [_digest(name, str(i)) for i in range(len(source))]
    return None


def split_keys(source: Any, memo: dict[int, tuple[str, list[bytes]] | None]) -> ImageKeys | None:
    """The keys of a split (a source, or subsets of one: a stratified split, a rank's share);
    `memo` shares the work between splits of the same data set. None: not keyable."""
    indices: np.ndarray | None = None
    while isinstance(source, SubsetSource):
        own = np.asarray(source.indices, dtype=np.int64)
        indices = own if indices is None else own[indices]
        source = source.base
    if id(source) not in memo:
        memo[id(source)] = _base_keys(source)
    found = memo[id(source)]
    if found is None:
        return None
    base, keys = found
    picked = keys if indices is None else [keys[i] for i in indices]
    return ImageKeys(base, picked, set(keys))


def keys_array(keys: Sequence[bytes]) -> np.ndarray:
    """Keys as an (N, KEY_BYTES) uint8 array (how a cache file stores them)."""
    if not keys:
        return np.zeros((0, KEY_BYTES), dtype=np.uint8)
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
