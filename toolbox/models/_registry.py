"""A fast index of the timm and torchvision model registries, cached as JSON in the user cache.

Importing timm takes seconds (it imports torch), while listing names needs none of it. The
index holds every architecture's name, source, family, default input size and pretrained tags;
it is keyed by the installed timm and torchvision versions, read from the package metadata without
importing them, and rebuilt when they change. A corrupt or unreadable index is rebuilt silently.
Parameter counts (`--params`, see `_listing.py`) are cached in the same file.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal

from toolbox.fileio import atomic_write_text
from toolbox.paths import cache_dir

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

# Bump when the layout of the index changes, so old files are rebuilt rather than misread.
INDEX_FORMAT = 1
INDEX_FILE = "model-index.json"
TV_PREFIX = "tv:"  # torchvision names as `tb models list` shows them: `tv:resnet18`


@dataclass(frozen=True)
class IndexEntry:
    """One architecture as the index knows it."""

    name: str  # as `tb models list` shows it: `resnet50`, `tv:resnet18`
    source: Literal["timm", "torchvision"]
    arch: str  # the name the library's factory takes
    family: str  # the module that defines it (`resnet` holds `seresnext26d_32x4d`)
    input_size: tuple[int, ...] | None  # default (C, H, W) of its default pretrained config
    pretrained_tags: tuple[str, ...] = ()  # full names: `resnet50.a1_in1k`, `ResNet18_Weights.X`


@dataclass
class ModelIndex:
    """The loaded index plus the parameter counts computed so far."""

    key: dict[str, Any]
    entries: list[IndexEntry]
    params: dict[str, int] = field(default_factory=dict)


def torchvision_classification_models() -> list[str]:
    """torchvision's image-classification architectures (not detection/segmentation/video)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def index_key() -> dict[str, Any]:
    """The installed timm and torchvision versions, from package metadata (no imports)."""
    versions: dict[str, Any] = {"format": INDEX_FORMAT}
    for dist in ("timm", "torchvision"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def index_path() -> Path:
    """Where the index lives: `<cache_dir>/model-index.json`."""
    return cache_dir() / INDEX_FILE


def _natural_key(text: str) -> list[Any]:
    # The order timm lists names in: resnet18 before resnet101.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text.lower())]


def _timm_entries() -> Iterator[IndexEntry]:
    import timm
    from timm.models import get_pretrained_cfg

    family = {arch: module for module in timm.list_modules()
              for arch in timm.list_models(module=module)}
    tags: dict[str, list[str]] = {}
    for full in timm.list_pretrained():
        tags.setdefault(full.partition(".")[0], []).append(full)
    for arch in timm.list_models():
        cfg = get_pretrained_cfg(arch)
        size = tuple(cfg.input_size) if cfg is not None and cfg.input_size else None
        yield IndexEntry(arch, "timm", arch, family.get(arch, ""), size,
                         tuple(tags.get(arch, ())))


def torchvision_defaults(arch: str) -> dict[str, Any]:
    """Preprocessing and facts of a torchvision architecture's default weights."""
    import torchvision.models as tvm

    try:
        weights = tvm.get_model_weights(arch).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return {"input_size": (3, 224, 224), "weights": []}
    preset = weights.transforms()
    crop = int(preset.crop_size[0])
    resize = int(preset.resize_size[0])
    return {
        "input_size": (3, crop, crop),
        "mean": tuple(preset.mean),
        "std": tuple(preset.std),
        "interpolation": str(preset.interpolation.value),
        "crop_pct": round(crop / resize, 4),
        "num_classes": len(weights.meta.get("categories") or []) or None,
        "num_params": weights.meta.get("num_params"),
        "url": weights.url,
        "default_weights": str(weights),
        "weights": [str(w) for w in tvm.get_model_weights(arch)],
    }


def _torchvision_entries(params: dict[str, int]) -> Iterator[IndexEntry]:
    import torchvision.models as tvm

    for arch in sorted(torchvision_classification_models(), key=_natural_key):
        facts = torchvision_defaults(arch)
        module = tvm.get_model_builder(arch).__module__.rpartition(".")[2]
        name = TV_PREFIX + arch
        if facts.get("num_params"):
            params[name] = int(facts["num_params"])  # published with the weights: free
        yield IndexEntry(name, "torchvision", arch, module, facts["input_size"],
                         tuple(facts["weights"]))


def build_index() -> ModelIndex:
    """Read both registries (imports timm and torchvision; a few seconds)."""
    params: dict[str, int] = {}
    entries = [*_timm_entries(), *_torchvision_entries(params)]
    return ModelIndex(index_key(), entries, params)


def _to_json(index: ModelIndex) -> str:
    return json.dumps({
        "key": index.key,
        "models": [[e.name, e.source, e.arch, e.family,
                    list(e.input_size) if e.input_size else None, list(e.pretrained_tags)]
                   for e in index.entries],
        "params": index.params,
    }, separators=(",", ":"))


def _from_json(text: str) -> ModelIndex:
    data = json.loads(text)
    entries = [IndexEntry(name, source, arch, family,
                          tuple(size) if size else None, tuple(tags))
               for name, source, arch, family, size, tags in data["models"]]
    params = {str(k): int(v) for k, v in data.get("params", {}).items()}
    return ModelIndex(data["key"], entries, params)


def save_index(index: ModelIndex) -> None:
    """Write the index atomically; a read-only or broken cache dir just means no caching."""
    with contextlib.suppress(OSError):
        atomic_write_text(index_path(), _to_json(index))


def load_index(*, rebuild: bool = False) -> ModelIndex:
    """The cached index when it matches the installed versions, else a freshly built one."""
    path = index_path()
    key = index_key()
    if not rebuild:
        try:
            index = _from_json(path.read_text(encoding="utf-8"))
            if index.key == key:
                return index
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            pass  # missing, unreadable or corrupt: rebuild below, never an error
    index = build_index()
    save_index(index)
    return index


def parameter_count(model: nn.Module) -> int:
    """Number of parameters, shared ones counted once."""
    return sum(p.numel() for p in model.parameters())


def build_without_weights(factory: Any) -> nn.Module | None:
    """Call `factory()` so that the model's parameters live on the meta device."""
    import torch
    from torch.nn.modules.module import register_module_parameter_registration_hook

    try:
        with torch.device("meta"):
            return factory()
    except Exception:  # any library error: try the slower route below
        pass

    def to_meta(_module: Any, _name: str, param: Any) -> Any:
        if param is None or param.device.type == "meta":
            return None
        return torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    handle = register_module_parameter_registration_hook(to_meta)
    try:
        return factory()
    except Exception:
        return None
    finally:
        handle.remove()


def known_names() -> list[str]:
    """Every listed name, for close-match suggestions of unknown models."""
    return [e.name for e in load_index().entries]
