"""The feature cache on disk: content-keyed rows of float32 features in checksummed files,
written atomically, read memory-mapped. A damaged or truncated file is reported and never used.

One feature set (a model key, see `train.feature_keys`) of one data set is a folder of shard
files `*.tbf`. A single-process run rewrites the folder as one shard holding the rows of the
images the data set has now (added ones computed, removed or changed ones dropped); under
`torchrun` each rank adds a shard of its own share, and the next single-process run that
changes the set merges them. The layout of a shard:

    MAGIC (8 bytes) | header length (8, little-endian) | JSON header | padding to 64 |
    keys (rows x 16 bytes) | padding to 64 | features (rows x dim float32) | BLAKE2b-128 of the
    keys and the features (16 bytes)

Checking a file reads it through in chunks (it is not mapped for that, so the check leaves no
resident pages behind); the features are then mapped, so a set larger than memory is paged in
as batches need it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolbox.fileio import atomic_path
from toolbox.train.feature_keys import FORMAT_VERSION, KEY_BYTES

MAGIC = b"TBFEAT\x00\x01"
SUFFIX = ".tbf"
_ALIGN = 64
_CHUNK = 8 * 1024**2
_MEMO_SIZE = 4  # feature sets kept open in this process (a tuning study re-reads the same)
# Folder -> (the shard files' names, sizes and times, their shards): an in-process run that
# finds the folder unchanged skips reading and checking it again.
_MEMO: OrderedDict[Path, tuple[tuple, list[Shard]]] = OrderedDict()


class DamagedFile(Exception):
    """A shard that fails its checks (why in the message)."""


@dataclass
class Shard:
    """Rows of one cache file (or, without a disk cache, of memory)."""

    keys: np.ndarray  # (rows, KEY_BYTES) uint8
    data: np.ndarray  # (rows, dim) float32: memory-mapped or in memory
    path: Path | None = None


def _pad(offset: int) -> int:
    return -offset % _ALIGN


def _offsets(header_len: int, rows: int, dim: int) -> tuple[int, int, int]:
    keys_at = 16 + header_len
    keys_at += _pad(keys_at)
    data_at = keys_at + rows * KEY_BYTES
    data_at += _pad(data_at)
    return keys_at, data_at, data_at + rows * dim * 4


def write_shard(path: Path, keys: np.ndarray, chunks: Iterable[np.ndarray], dim: int) -> Path:
    """Write `keys` and their feature rows (given in `chunks` of float32 (k, dim), in order)
    atomically to `path`."""
    rows = len(keys)
    header = json.dumps({"format": FORMAT_VERSION, "rows": rows, "dim": dim,
                         "dtype": "float32"}).encode()
    keys_at, data_at, end = _offsets(len(header), rows, dim)
    digest = hashlib.blake2b(digest_size=16)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(MAGIC + len(header).to_bytes(8, "little") + header)
        handle.write(b"\0" * (keys_at - handle.tell()))
        key_bytes = np.ascontiguousarray(keys, dtype=np.uint8).tobytes()
        handle.write(key_bytes)
        digest.update(key_bytes)
        handle.write(b"\0" * (data_at - handle.tell()))
        written = 0
        for chunk in chunks:
            data = np.ascontiguousarray(chunk, dtype=np.float32).tobytes()
            handle.write(data)
            digest.update(data)
            written += len(chunk)
        if written != rows or handle.tell() != end:
            raise ValueError(f"{written} feature rows for {rows} keys")
        handle.write(digest.digest())
    return path


def _hash_range(handle, start: int, stop: int, digest) -> None:
    handle.seek(start)
    left = stop - start
    while left > 0:
        block = handle.read(min(_CHUNK, left))
        if not block:
            raise DamagedFile("truncated")
        digest.update(block)
        left -= len(block)


def read_shard(path: Path, verify: bool = True) -> Shard:
    """The shard at `path`, its features memory-mapped.

    Raises:
        DamagedFile: not a shard of this format, truncated, or its checksum does not match.
        FileNotFoundError: removed meanwhile (by a run that rewrote the set).
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if handle.read(8) != MAGIC:
            raise DamagedFile("not a tb feature file")
        header_len = int.from_bytes(handle.read(8), "little")
        if header_len > 4096:
            raise DamagedFile("bad header")
        try:
            header = json.loads(handle.read(header_len))
            rows, dim = int(header["rows"]), int(header["dim"])
        except (ValueError, KeyError, TypeError):
            raise DamagedFile("bad header") from None
        if header.get("format") != FORMAT_VERSION or header.get("dtype") != "float32":
            raise DamagedFile("another cache format")
        keys_at, data_at, end = _offsets(header_len, rows, dim)
        if size != end + 16:
            raise DamagedFile(f"{size} bytes where {end + 16} belong (truncated or padded)")
        if verify:
            digest = hashlib.blake2b(digest_size=16)
            _hash_range(handle, keys_at, keys_at + rows * KEY_BYTES, digest)
            _hash_range(handle, data_at, end, digest)
            handle.seek(end)
            if handle.read(16) != digest.digest():
                raise DamagedFile("checksum mismatch")
        handle.seek(keys_at)
        keys = np.frombuffer(handle.read(rows * KEY_BYTES), dtype=np.uint8).reshape(rows,
                                                                                   KEY_BYTES)
    data = (np.memmap(path, dtype=np.float32, mode="r", offset=data_at, shape=(rows, dim))
            if rows else np.zeros((0, dim), dtype=np.float32))
    return Shard(keys, data, path)


def _signature(files: list[Path]) -> tuple:
    out = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        out.append((file.name, stat.st_size, stat.st_mtime_ns))
    return tuple(out)


class FeatureStore:
    """One feature set of one data set: its folder of shards, or memory alone (`folder` None,
    when the cache is off or its folder cannot be written)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.shards: list[Shard] = []
        self.listed: list[Path] = []  # the files the shards were read from (and damaged ones)
        self.damaged: list[str] = []  # "path (why)" for each damaged file found

    def load(self) -> list[Shard]:
        """Every readable shard of the folder (damaged ones are listed in `damaged`)."""
        if self.folder is None or not self.folder.is_dir():
            return self.shards
        files = sorted(self.folder.glob("*" + SUFFIX))
        self.listed = files
        signature = _signature(files)
        memo = _MEMO.get(self.folder)
        if memo is not None and memo[0] == signature:
            _MEMO.move_to_end(self.folder)
            self.shards = list(memo[1])
            return self.shards
        shards = []
        for file in files:
            try:
                shards.append(read_shard(file))
            except FileNotFoundError:
                continue
            except (DamagedFile, OSError, ValueError) as exc:
                self.damaged.append(f"{file} ({exc})")
        self.shards = shards
        if not self.damaged:
            self._remember(signature, shards)
        return shards

    def save(self, keys: np.ndarray, chunks: Iterable[np.ndarray], dim: int, *,
             replace: bool, tag: str = "") -> None:
        """Add a shard of `keys` and their rows; with `replace`, it holds the whole set and the
        files listed before are removed. Without a folder the rows stay in memory.

        Raises:
            OSError: the folder cannot be written (the caller goes on in memory).
        """
        if self.folder is None:
            shard = Shard(np.asarray(keys), np.concatenate(
                [np.asarray(c, dtype=np.float32) for c in chunks] or
                [np.zeros((0, dim), np.float32)]))
            self.shards = [shard] if replace else [*self.shards, shard]
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{tag}{secrets.token_hex(6)}{SUFFIX}"
        write_shard(path, keys, chunks, dim)
        shard = read_shard(path, verify=False)  # just written and renamed into place
        if replace:
            for old in self.listed:
                with contextlib.suppress(OSError):  # left for the next rewrite
                    old.unlink(missing_ok=True)
            self.shards, self.damaged = [shard], []
        else:
            self.shards = [*self.shards, shard]
        self.listed = sorted(self.folder.glob("*" + SUFFIX))
        self._remember(_signature(self.listed), self.shards)

    def _remember(self, signature: tuple, shards: list[Shard]) -> None:
        if self.folder is None:
            return
        _MEMO[self.folder] = (signature, list(shards))
        _MEMO.move_to_end(self.folder)
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)


def forget() -> None:
    """Drop the feature sets this process keeps open (tests; a caller short of memory)."""
    _MEMO.clear()
