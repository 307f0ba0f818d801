"""Model files this toolbox writes and reads: `.safetensors` with metadata, and `.pt` checkpoints.

Every file carries a `ModelMeta` (architecture, classes, preprocessing), so `tb summary`,
`tb predict`, `tb evaluate` and `tb finetune --weights` need no flags repeated. Checkpoints hold
only tensors and plain containers, so they load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolbox.errors import ToolboxError
from toolbox.fileio import atomic_path, is_file

if TYPE_CHECKING:
    from torch import nn

META_KEY = "tb_meta"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# How an image meets the input size (`ModelMeta.resize`; `toolbox.preprocess` does it).
RESIZE_MODES = {
    "crop": "shorter side to size / crop_pct, centre crop (keeps the aspect, cuts edges)",
    "squash": "straight to size x size (keeps everything, distorts the aspect)",
    "letterbox": "longer side to size, padded with black (keeps both)",
}


@dataclass
class ModelMeta:
    """What is needed to rebuild a model and feed it images the way it was trained."""

    model: str  # a name `create_model` takes
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    resize: str = "crop"  # how images meet input_size (toolbox.preprocess); older files: crop
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    task: str = "classify"  # or "segment": per-pixel logits at the input size
    decoder: str | None = None  # segmentation decoder (fpn, unet) over a features_only encoder

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (safe for JSON and for `weights_only` checkpoints)."""
        data = dataclasses.asdict(self)
        data["input_size"] = list(self.input_size)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ModelMeta:
        """Inverse of `to_dict`; unknown keys (from newer versions) are ignored.

        Raises:
            ValueError: a field is missing or of the wrong type (a damaged or foreign file);
                the message names it.
        """
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("model", "num_classes"):
            if key not in kwargs:
                raise ValueError(f"no '{key}'")
        for key, ok, want in _META_CHECKS:
            if key in kwargs and not ok(kwargs[key]):
                raise ValueError(f"'{key}' must be {want}, got {kwargs[key]!r:.60}")
        for key in ("input_size", "mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# What every ModelMeta field read from a file must be: (field, check, what it must be).
_META_CHECKS = (
    ("model", lambda v: isinstance(v, str) and bool(v), "a model name"),
    ("num_classes", lambda v: _is_int(v) and v >= 1, "a positive integer"),
    ("class_names", lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
     "a list of names"),
    ("input_size", lambda v: isinstance(v, list | tuple) and len(v) == 3
     and all(_is_int(n) and n >= 1 for n in v), "three positive integers (C, H, W)"),
    ("mean", lambda v: isinstance(v, list | tuple) and 1 <= len(v) <= 4
     and all(map(_is_number, v)), "one number per channel"),
    ("std", lambda v: isinstance(v, list | tuple) and 1 <= len(v) <= 4
     and all(_is_number(n) and n > 0 for n in v), "one positive number per channel"),
    ("interpolation", lambda v: isinstance(v, str), "a name such as bilinear"),
    ("crop_pct", lambda v: _is_number(v) and v > 0, "a positive number"),
    ("resize", lambda v: isinstance(v, str) and v in RESIZE_MODES,
     "crop, squash or letterbox"),
    ("model_kwargs", lambda v: isinstance(v, dict) and "num_classes" not in v
     and all(isinstance(k, str) for k in v), "a mapping of argument names"),
)


def save_safetensors(model: nn.Module, dest: str | Path, meta: ModelMeta) -> Path:
    """Write `model`'s weights and `meta` to a `.safetensors` file atomically."""
    from safetensors.torch import save_model

    dest = Path(dest)
    with atomic_path(dest) as tmp:
        save_model(model, str(tmp), metadata={META_KEY: json.dumps(meta.to_dict())})
    return dest


def _bad_file(path: Path, why: str) -> ToolboxError:
    return ToolboxError(f"cannot load model file {path}: {why}",
                        "pass a .safetensors or .pt file written by `tb finetune`")


def torch_load(path: Path, what: str, hint: str) -> Any:
    """`torch.load(weights_only=True)` on the CPU: tensors and plain containers, never code.

    Raises:
        ToolboxError: the file is not one torch can read, or it holds anything else (a pickle
            that would run code is refused, not run).
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and safetensors errors of many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ToolboxError(f"cannot load {what} {path}: {first}", hint) from exc


def _load_pt(path: Path) -> dict[str, Any]:
    obj = torch_load(path, "model file", "pass a .safetensors or .pt file written by `tb finetune`")
    if not isinstance(obj, dict):
        raise _bad_file(path, "it does not hold a state dict")
    return obj


def _meta(path: Path, data: Any) -> ModelMeta:
    try:
        return ModelMeta.from_dict(data)
    except ValueError as exc:
        raise _bad_file(path, f"its tb metadata is damaged: {exc}") from None


def read_meta(path: str | Path) -> ModelMeta | None:
    """The ModelMeta stored in a model file, or None when the file has none (a foreign file)."""
    path = Path(path)
    if not is_file(path):
        raise ToolboxError(f"no such file: {path}", "check the path")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                raw = (handle.metadata() or {}).get(META_KEY)
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise _bad_file(path, "not a valid safetensors file") from exc
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            raise _bad_file(path, "its tb metadata is not valid JSON") from None
        return _meta(path, data)
    obj = _load_pt(path)
    return _meta(path, obj["meta"]) if "meta" in obj else None


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Weights from a `.safetensors` file, a `tb` checkpoint (its `model` entry) or a `.pth`."""
    import torch

    path = Path(path)
    if not is_file(path):
        raise ToolboxError(f"no such file: {path}", "check the path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise _bad_file(path, "not a valid safetensors file") from exc
    else:
        obj = _load_pt(path)
        state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    if not all(isinstance(k, str) for k in state) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise _bad_file(path, "it does not hold a state dict (names mapped to tensors)")
    # DDP and torch.compile prefixes, so any of our checkpoints loads into a plain model.
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def build_from_meta(meta: ModelMeta, pretrained: bool = False, path: Path | None = None
                    ) -> nn.Module:
    """The architecture `meta` describes: a classifier, an encoder-decoder segmenter, or user
    code (`tb finetune --model file.py:Class`), which must still be where the run found it."""
    from toolbox.models._user import is_code_spec, load_user_model

    if meta.task == "segment":
        from toolbox.models._segmenter import create_segmenter

        return create_segmenter(meta.model, num_classes=meta.num_classes,
                                decoder=meta.decoder or "fpn", pretrained=pretrained,
                                **meta.model_kwargs)
    if is_code_spec(meta.model):
        try:
            return load_user_model(meta.model, meta.model_kwargs, num_classes=meta.num_classes)
        except ToolboxError as exc:
            raise ToolboxError(f"cannot rebuild the model of {path or 'this model file'}: it "
                               f"was trained with --model {meta.model}, and {exc.message}",
                               "put the model code back where it was (or on the Python path)"
                               ) from exc
    from toolbox.models._factory import create_model

    return create_model(meta.model, num_classes=meta.num_classes, pretrained=pretrained,
                        **meta.model_kwargs)


def load_model_file(path: str | Path) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the model a `tb` model file describes and load its weights (on the CPU)."""
    path = Path(path)
    meta = read_meta(path)
    if meta is None:
        raise _bad_file(path, "it has no tb metadata (architecture and classes)")
    model = build_from_meta(meta, path=path)
    state = load_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise _bad_file(path, f"weights do not fit {meta.model}: "
                              f"{str(exc).splitlines()[0]}") from exc
    return model, meta
