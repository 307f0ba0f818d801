"""`tb models list`: the cached index filtered by name, source and pretrained tags, with
parameter counts computed once on the meta device and kept in the index."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toolbox.errors import suggest, unknown_name
from toolbox.models._factory import create_model
from toolbox.models._registry import (
    IndexEntry,
    build_without_weights,
    load_index,
    parameter_count,
    save_index,
)
from toolbox.progress import NullProgress

if TYPE_CHECKING:
    from toolbox.progress import Progress

SOURCES = ("timm", "torchvision", "all")
_WILDCARDS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class ModelRow:
    """One row of `tb models list`."""

    name: str
    source: str
    input_size: list[int] | None
    pretrained_tags: list[str]
    family: str = ""  # the defining module: why `resnet` lists seresnext26d_32x4d
    params: int | None = None
    # With --pretrained: where the first listed tag's weights would come from.
    weights_source: str | None = None


@dataclass
class ModelListing:
    """What `list_models` found: the rows shown, and how many matched before `--limit`."""

    rows: list[ModelRow]
    matched: int
    total: int  # architectures in the index for the chosen source
    matched_by_source: dict[str, int] = field(default_factory=dict)
    suggestions: list[str] = field(default_factory=list)  # close names when nothing matched


def _matches(entry: IndexEntry, pattern: str) -> tuple[bool, tuple[str, ...]]:
    """Whether `entry` matches the `--filter` pattern, and which of its tags do.

    A plain word matches anywhere in the name or the family (`resnet` finds
    `seresnext26d_32x4d`, defined in timm's `resnet` module); a pattern with `* ? [` is matched
    against the whole name as timm does (torchvision names with or without `tv:`). A pattern
    with a dot is matched against the pretrained names (`resnet50.a1*`).
    """
    tags = entry.pretrained_tags
    if not pattern:
        return True, tags
    pattern = pattern.lower()
    if "." in pattern:
        glob = pattern if _WILDCARDS.search(pattern) else f"*{pattern}*"
        hits = tuple(t for t in tags if any(
            fnmatch.fnmatchcase(full.lower(), glob)
            for full in (t, f"{entry.name}.{t.rpartition('.')[2]}",
                         f"{entry.arch}.{t.rpartition('.')[2]}")))
        return bool(hits), hits
    if _WILDCARDS.search(pattern):
        names = (entry.name.lower(), entry.arch.lower())
        return any(fnmatch.fnmatchcase(n, pattern) for n in names), tags
    return pattern in entry.name.lower() or pattern in entry.family.lower(), tags


def count_params(name: str) -> int | None:
    """Parameters of architecture `name` (a listed name), without allocating its weights.

    Built on the meta device; models whose constructors need real numbers (a `.item()` on a
    schedule of drop rates) are built with every new parameter moved to meta as it registers,
    so no weights are allocated either way. None when the model cannot be built at all.
    """
    model = build_without_weights(lambda: create_model(name))
    return None if model is None else parameter_count(model)


def _weights_source(entry: IndexEntry, tag: str) -> str:
    """hub-cache, package or download (imports timm or torchvision: only for --pretrained)."""
    from toolbox.models._factory import timm_weights_source, torchvision_weights_source

    if entry.source == "timm":
        return timm_weights_source(tag)
    return torchvision_weights_source(tag)


def list_models(*, pattern: str = "", source: str = "all", pretrained: bool = False,
                params: bool = False, limit: int | None = None,
                progress: Progress | None = None) -> ModelListing:
    """Architectures from the index matching `pattern`, optionally with parameter counts.

    Reads only the cached index (no torch, no timm) unless it must be rebuilt or `params` asks
    for counts that are not cached yet.
    """
    if source not in SOURCES:
        raise unknown_name("source", source, SOURCES)
    index = load_index()
    pool = [e for e in index.entries if source == "all" or e.source == source]
    found: list[tuple[IndexEntry, tuple[str, ...]]] = []
    for entry in pool:
        ok, tags = _matches(entry, pattern)
        if ok and (tags or not pretrained):
            found.append((entry, tags))
    shown = found if limit is None else found[:max(limit, 0)]
    counts: dict[str, int | None] = {}
    if params:
        missing = [e.name for e, _ in shown if e.name not in index.params]
        if missing:
            progress = progress or NullProgress()
            progress.start("counting parameters", total=len(missing), unit="models")
            for name in missing:
                count = count_params(name)
                if count is not None:
                    index.params[name] = count
                progress.advance()
            progress.finish()
            save_index(index)
        counts = {e.name: index.params.get(e.name) for e, _ in shown}
    rows = [ModelRow(e.name, e.source, list(e.input_size) if e.input_size else None,
                     list(tags), e.family, counts.get(e.name),
                     _weights_source(e, tags[0]) if pretrained and tags else None)
            for e, tags in shown]
    by_source: dict[str, int] = {}
    for entry, _ in found:
        by_source[entry.source] = by_source.get(entry.source, 0) + 1
    close = []
    if not found and pattern.strip("*?. "):
        words = {e.family for e in pool if e.family} | {e.name for e in pool}
        close = suggest(pattern.strip("*?. ").lower(), sorted(words))
    return ModelListing(rows, matched=len(found), total=len(pool), matched_by_source=by_source,
                        suggestions=close)
