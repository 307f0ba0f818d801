"""WebDataset tar shards as `tb` reads them: patterns (brace lists, globs, `pipe:`, URLs) to
shard lists, the index file `tb datasets pack` writes beside them, and the samples of a shard
list decoded with the `webdataset` library's pipeline stages.

A sample is `__key__` plus the image's bytes under its extension (`jpg`, `png`, ...) and its
class index under `cls`. What cannot be used is never fatal on its own: a sample without an
image or a label, or with a label the index does not know, is skipped with its reason; a
truncated shard ends where it breaks, named with the last good key.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolbox.errors import ToolboxError
from toolbox.fileio import is_file
from toolbox.images import IMAGE_EXTENSIONS
from toolbox.paths import is_remote
from toolbox.sources import SkippedFile

INDEX_FILE = "index.json"
INDEX_FORMAT = "tb-shards-1"
MAX_SHARDS = 100_000  # what one pattern may name (100,000 shards of 256 MB: 25.6 TB)
MAX_GLOBS = 1_000  # brace expansions that are globs: each one lists a folder
IMAGE_KEYS = tuple(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))


def looks_like_shards(data: str | Path) -> bool:
    """Whether `--data` names tar shards: a `.tar` pattern or URL, or a folder `tb datasets
    pack` wrote (an index file beside `train-*.tar`)."""
    text = str(data)
    if is_remote(text) or ".tar" in text:
        return True
    folder = Path(text)
    return os.path.isdir(folder) and (folder / INDEX_FILE).is_file() and any(folder.glob("*.tar"))


def expand_pattern(pattern: str) -> list[str]:
    """The shards `pattern` names, in order: brace lists and ranges (`{000000..000063}`,
    `{a,b}`, as webdataset expands them), then globs over local paths. A folder packed by
    `tb datasets pack` stands for its training shards.

    Raises:
        ToolboxError: nothing matches (naming the pattern and what was looked for).
    """
    import braceexpand  # webdataset's own dependency, the expansion its `SimpleShardList` does

    if not is_remote(pattern) and os.path.isdir(Path(pattern)):
        pattern = str(Path(pattern) / "train-*.tar")
    found: list[str] = []
    try:  # lazily, so a pattern that names billions of shards stops at the limit
        parts = list(itertools.islice(braceexpand.braceexpand(pattern), MAX_SHARDS + 1))
    except braceexpand.UnbalancedBracesError:
        raise ToolboxError(f"shard pattern {pattern}: unbalanced braces",
                           "e.g. 'shards/train-{000000..000063}.tar'") from None
    if len(parts) > MAX_SHARDS:
        raise ToolboxError(f"shard pattern {pattern} names more than {MAX_SHARDS:,} shards",
                           "pack into larger shards (--shard-size)")
    if len(parts) > MAX_GLOBS and any(glob.has_magic(part) for part in parts):
        raise ToolboxError(f"shard pattern {pattern} names more than {MAX_GLOBS:,} globs",
                           "use braces for the numbers or one glob, not both over many")
    for part in parts:
        if is_remote(part):
            found.append(part)
        elif glob.has_magic(part):
            found.extend(sorted(p for p in glob.glob(part) if is_file(p)))  # no folders
        elif is_file(Path(part)):
            found.append(part)
        else:
            raise ToolboxError(f"shard pattern {pattern}: no such shard {part}",
                               "check the range in braces; `ls` the folder")
    if not found:
        raise ToolboxError(f"shard pattern {pattern} matches no file",
                           "brace ranges ({000000..000009}) and globs (*.tar) are expanded")
    return list(dict.fromkeys(found))


@dataclass
class ShardSet:
    """A list of shards, the classes their `cls` indices name and each shard's sample count
    (from the index file), so an epoch's length is known before anything is read."""

    pattern: str
    urls: list[str]
    classes: list[str]
    counts: list[int]
    class_counts: list[list[int]] = field(default_factory=list)  # per shard, per class

    def __len__(self) -> int:
        return sum(self.counts)

    def describe(self) -> str:
        return f"{self.pattern} ({len(self.urls)} shard(s), {len(self):,} samples)"


def _index_place(url: str) -> str:
    """Where the index of shard `url` lives: beside it (a `pipe:` command's last `.tar` word)."""
    if url.startswith("pipe:"):
        words = [w for w in url[5:].split() if ".tar" in w]
        if not words:
            raise ToolboxError(f"cannot tell where the index of {url} is",
                               f"name a .tar file in the command; its {INDEX_FILE} is read "
                               "from the same place")
        url = words[-1]
    return url.rsplit("/", 1)[0] + "/" + INDEX_FILE if "/" in url else INDEX_FILE


def read_index(place: str) -> dict[str, Any]:
    """An index file (local, or remote through webdataset's `gopen`)."""
    try:
        if is_remote(place):
            import webdataset as wds

            with wds.gopen(place, "rb") as handle:
                data = json.loads(handle.read())
        else:
            data = json.loads(Path(place).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolboxError(f"no {INDEX_FILE} beside the shards ({place})",
                           "shards written by `tb datasets pack` have one; it names the "
                           "classes and counts the samples") from None
    except (OSError, ValueError) as exc:
        raise ToolboxError(f"cannot read the shard index {place}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        raise ToolboxError(f"{place} is not a tb shard index (format {INDEX_FORMAT})",
                           "re-pack with `tb datasets pack`")
    return data


def _merged_index(place: str) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The classes and the per-shard counts of the index at `place` and of the indexes that
    the `--shard K/N` jobs of one pack wrote beside it (`index-KofN.json`)."""
    places = [place]
    if not is_remote(place):
        folder = Path(place).parent
        places = [str(p) for p in sorted(folder.glob("index*.json"))] or [place]
    classes: list[str] | None = None
    counts: dict[str, dict[str, Any]] = {}
    for one in places:
        data = read_index(one)
        if classes is not None and data["classes"] != classes:
            raise ToolboxError(f"{one} names other classes than the index beside it",
                               "pack every --shard K/N job from the same source")
        classes = list(data["classes"])
        for split in data["splits"].values():
            counts.update({str(k): v for k, v in split["shards"].items()})
    return classes or [], counts


def open_shards(pattern: str) -> ShardSet:
    """The shards `pattern` names, with their classes and counts from the index file.

    Raises:
        ToolboxError: nothing matches, no index, a shard the index does not list.
    """
    urls = expand_pattern(pattern)
    memo: dict[str, tuple[list[str], dict[str, dict[str, Any]]]] = {}
    classes: list[str] | None = None
    counts, per_class = [], []
    for url in urls:
        place = _index_place(url)
        if place not in memo:
            memo[place] = _merged_index(place)
        these, known = memo[place]
        if classes is not None and these != classes:
            raise ToolboxError(f"{url}: its index names other classes than the first shard's",
                               "train from shards of one packed data set")
        classes = these
        name = url.rsplit("/", 1)[-1]
        if name not in known:
            raise ToolboxError(f"shard {url} is not in its index {place}",
                               "shards are listed when `tb datasets pack` writes them")
        counts.append(int(known[name]["samples"]))
        per_class.append([int(n) for n in known[name]["class_counts"]])
    return ShardSet(pattern, urls, classes or [], counts, per_class)


def shards_of(shards: ShardSet, rank: int, world_size: int) -> list[int]:
    """The shards (their positions in `shards.urls`) that one process of `world_size` reads:
    every `world_size`-th from `rank`, as webdataset's `split_by_node` hands them out."""
    return list(range(rank, len(shards.urls), world_size))


# ---- reading: raw samples -> (key, image bytes or None, label or None, skip reason) -----------

@dataclass
class ShardSample:
    """One sample as read: `skipped` set when it cannot be used (then image is None)."""

    key: str
    data: bytes | None
    ext: str
    label: int
    skipped: SkippedFile | None = None
    url: str = ""


def _shard_named(args: tuple) -> str:
    """The shard an exception from webdataset's tar stages names (as a URL argument, or in
    the file object's repr that `tar_file_iterator` appends to the message)."""
    for arg in reversed(args):
        text = str(arg)
        named = re.search(r"name='([^']*\.tar[^']*)'", text)
        if named:
            return named.group(1)
        if isinstance(arg, str) and ".tar" in arg and " " not in arg:
            return arg
    return "?"


class _Errors:
    """webdataset's error handler: each failure noted (its shard named), reading goes on."""

    def __init__(self) -> None:
        self.found: list[SkippedFile] = []
        self.last_key: dict[str, str] = {}
        self.reported: set[str] = set()  # shards already named

    def __call__(self, exn: Exception) -> bool:
        url = _shard_named(exn.args)
        text = str(exn.args[0]) if exn.args else type(exn).__name__
        after = self.last_key.get(url)
        where = f"{url}" + (f" after key {after}" if after else "")
        reason = ("truncated shard: the rest of it is skipped" if "end of" in text.lower()
                  or "truncated" in text.lower() or "unexpected" in text.lower()
                  else f"unreadable shard ({text.split(' @ ')[0]})")
        if url not in self.reported:  # one line a shard (a break is reported twice)
            self.reported.add(url)
            self.found.append(SkippedFile(where, reason))
        return True


def _sample_of(raw: dict[str, Any], classes: list[str], index: dict[str, int]) -> ShardSample:
    key = str(raw.get("__key__"))
    url = str(raw.get("__url__", "?"))
    if "__skip__" in raw:
        return ShardSample(key, None, "", -1, raw["__skip__"], url)
    where = f"{url}:{key}"
    ext = next((k for k in IMAGE_KEYS if k in raw), None)
    cls = raw.get("cls")
    reason = None
    label = -1
    if ext is None:
        reason = "no image in the sample (expected one of " + ", ".join(IMAGE_KEYS) + ")"
    elif cls is None:
        reason = "no label (cls) in the sample"
    else:
        text = bytes(cls).decode("utf-8", "replace").strip()
        if text.isdecimal() and int(text) < len(classes):
            label = int(text)
        elif text in index:
            label = index[text]
        else:
            reason = f"label {text!r} is not in the index ({len(classes)} classes)"
    if reason is not None:
        return ShardSample(key, None, "", -1, SkippedFile(where, reason), url)
    return ShardSample(key, bytes(raw[ext]), ext, label, url=url)


def _short_shards(counts: dict[str, int], errors: _Errors) -> Any:
    """A pipeline stage (before any shuffling, so samples still come shard by shard) that
    follows each shard with a skip marker when it held fewer samples than its index says:
    Python's tar reader ends a file cut at a member's boundary quietly, as if it were whole
    (`errors` has named the shards whose break it did notice)."""

    def stage(src: Any) -> Iterator[dict[str, Any]]:
        current, seen, last = None, 0, ""
        for sample in src:
            url = sample.get("__url__")
            if url != current:
                if current not in errors.reported:
                    yield from _shortfall(current, seen, last, counts)
                current, seen = url, 0
            seen += 1
            last = str(sample.get("__key__"))
            yield sample
        if current not in errors.reported:
            yield from _shortfall(current, seen, last, counts)

    return stage


def _shortfall(url: str | None, seen: int, last: str, counts: dict[str, int]
               ) -> Iterator[dict[str, Any]]:
    expected = counts.get(str(url).rsplit("/", 1)[-1]) if url is not None else None
    if expected is not None and seen < expected:
        yield {"__url__": url, "__key__": last,
               "__skip__": SkippedFile(f"{url} after key {last}",
                                       f"truncated shard: {seen} of its {expected} samples "
                                       "read, the rest is skipped")}


def read_samples(urls: list[str], classes: list[str], *, split_nodes: bool = False,
                 split_workers: bool = False, shuffle_shards_seed: int | None = None,
                 buffer: int = 0, seed: int = 0, counts: dict[str, int] | None = None
                 ) -> Iterator[ShardSample]:
    """The samples of `urls` through webdataset's stages: this process's shards under
    `torchrun` (`split_by_node`) and this loader worker's (`split_by_worker`), the shard
    order shuffled by `shuffle_shards_seed` (the same in every worker, so the workers still
    split one list), and a `buffer`-sample shuffle buffer seeded by `seed`. With `counts`
    (samples per shard name, from the index), a shard that ends early is reported."""
    import webdataset as wds

    errors = _Errors()
    stages: list[Any] = [wds.SimpleShardList(urls)]
    if split_nodes:
        stages.append(wds.split_by_node)
    if shuffle_shards_seed is not None:
        stages.append(wds.shuffle(len(urls), len(urls), seed=shuffle_shards_seed))
    if split_workers:
        stages.append(wds.split_by_worker)
    stages.append(wds.tarfile_to_samples(handler=errors))
    if counts:
        stages.append(_short_shards(counts, errors))
    if buffer > 1:
        stages.append(wds.shuffle(buffer, min(buffer, 100), seed=seed))
    index = {name: i for i, name in enumerate(classes)}
    for raw in wds.DataPipeline(*stages):
        while errors.found:
            yield ShardSample("", None, "", -1, errors.found.pop(0))
        sample = _sample_of(raw, classes, index)
        errors.last_key[str(raw.get("__url__"))] = sample.key
        yield sample
    while errors.found:
        yield ShardSample("", None, "", -1, errors.found.pop(0))
