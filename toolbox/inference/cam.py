"""Where the model looked: class activation maps with the `grad-cam` library (pytorch-grad-cam),
on a target layer found in the model itself, drawn over the image the model saw.

The target layer is the last one whose output is still a spatial map, (N, C, H, W) with more
than one cell: for timm models the last entry of their `feature_info` (the stage the classifier
pools), for torchvision and user models the last such module in the order the forward pass
finishes them (`layer4` of a ResNet, `features` of an EfficientNet). Maps are taken for the
class asked for (the predicted one by default) and scaled to [0, 1] per image by the library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from toolbox.errors import ToolboxError, unknown_name

if TYPE_CHECKING:
    from torch import nn

    from toolbox.inference._loading import LoadedModel
    from toolbox.models import ModelMeta

OVERLAY_MIN_SIDE = 224  # overlays of small inputs (28-pixel digits) are enlarged to be seen


@dataclass(frozen=True)
class CamMethod:
    """A CAM method of the grad-cam library, by the name `--cam` takes."""

    name: str
    class_name: str  # in `pytorch_grad_cam`
    description: str


CAM_METHODS = {m.name: m for m in (
    CamMethod("gradcam", "GradCAM", "channels weighted by their mean gradient"),
    CamMethod("gradcam++", "GradCAMPlusPlus", "second-order weights; several objects at once"),
    CamMethod("hirescam", "HiResCAM", "gradients times activations, cell by cell"),
    CamMethod("xgradcam", "XGradCAM", "gradients normalised by the activations"),
    CamMethod("layercam", "LayerCAM", "positive gradients per cell; finer maps"),
    CamMethod("eigencam", "EigenCAM", "first principal component of the activations (no "
                                      "gradients, not class-specific)"),
    CamMethod("eigengradcam", "EigenGradCAM", "principal component of gradients x activations"),
    CamMethod("scorecam", "ScoreCAM", "channels weighted by the score they produce (slow)"),
)}
DEFAULT_CAM = "gradcam"

# Modules that hand their input on unchanged (or nearly): never the layer a map is read from.
_PASS_THROUGH = ("Identity", "Dropout", "Dropout2d", "DropPath", "Flatten")


def cam_method(name: str) -> CamMethod:
    """The CAM method called `name`.

    Raises:
        UsageError: an unknown name (with the closest ones).
    """
    key = name.strip().lower()
    if key not in CAM_METHODS:
        raise unknown_name("CAM method", name, CAM_METHODS,
                           f"choose one of: {', '.join(CAM_METHODS)}", param="--cam")
    return CAM_METHODS[key]


@dataclass(frozen=True)
class TargetLayer:
    """The module a map is read from, by its name in `model.named_modules()`."""

    name: str
    module: nn.Module
    map_size: tuple[int, int]  # its output's (H, W) at the model's input size


def _module_outputs(model: nn.Module, input_size: tuple[int, int, int]
                    ) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every named module, in the order one forward pass finishes
    them (containers after their children); a module run twice is listed at its last run."""
    import torch

    finished: dict[str, tuple[int, ...]] = {}
    handles = []

    def hook(name: str):
        def record(_module, _inputs, output) -> None:
            if isinstance(output, torch.Tensor):
                finished.pop(name, None)
                finished[name] = tuple(output.shape)
        return record

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name)))
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=device))
    finally:
        for handle in handles:
            handle.remove()
    return list(finished.items())


def _spatial(shape: tuple[int, ...], input_size: tuple[int, ...]) -> bool:
    """A (N, C, H, W) map of more than one cell, at one reduction of the input along both axes
    (which tells it from the (N, H, W, C) tensors inside ConvNeXt blocks)."""
    if len(shape) != 4 or shape[2] * shape[3] <= 1:
        return False
    height, width = input_size[-2:]
    h, w = shape[2], shape[3]
    return h <= height and w <= width and round(height / h) == round(width / w)


def find_target_layer(model: nn.Module, meta: ModelMeta, name: str | None = None
                      ) -> TargetLayer:
    """The layer CAMs of `model` are read from: `name` when given, else found (see above).

    Raises:
        ToolboxError: `name` is no module of the model or gives no spatial map, or no layer
            of the model does; the message names `--cam-layer` and a few candidates.
    """
    from toolbox.errors import suggest

    modules = dict(model.named_modules())
    outputs = _module_outputs(model, tuple(meta.input_size))
    kinds = {n: type(modules[n]).__name__ for n, _ in outputs}
    # A map is only worth reading when the network stays spatial after it: a token
    # sequence (N, T, C) further on means a transformer, whose maps need more than this.
    last_tokens = max((i for i, (_, shape) in enumerate(outputs) if len(shape) == 3),
                      default=-1)
    spatial = [(n, shape) for i, (n, shape) in enumerate(outputs) if i > last_tokens
               and _spatial(shape, meta.input_size) and kinds[n] not in _PASS_THROUGH]
    shapes = dict(outputs)
    candidates = [n for n, _ in spatial][-5:][::-1] or [n for n, _ in outputs][-5:][::-1]
    if name is not None:
        if name not in modules or not name:
            close = suggest(name, [n for n in modules if n]) or candidates
            raise ToolboxError(f"{meta.model} has no layer '{name}'; choose one with "
                               f"--cam-layer NAME, e.g. {', '.join(close)}")
        shape = shapes.get(name)
        if shape is None or not _spatial(shape, meta.input_size):
            raise ToolboxError(f"layer '{name}' of {meta.model} gives no spatial map (output "
                               f"{list(shape) if shape else 'unused'}); choose another with "
                               f"--cam-layer NAME, e.g. {', '.join(candidates)}")
        return TargetLayer(name, modules[name], (shape[2], shape[3]))
    if not spatial:
        raise ToolboxError(f"no CAM target layer found in {meta.model} (no layer gives a "
                           f"spatial map); choose one with --cam-layer NAME, e.g. "
                           f"{', '.join(candidates)}")
    chosen = spatial[-1][0]
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1].get("module") if isinstance(info[-1], dict) else None
        if last in dict(spatial):
            chosen = last
    shape = shapes[chosen]
    return TargetLayer(chosen, modules[chosen], (shape[2], shape[3]))


def model_view(image: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """The picture the model is shown (resized and cropped as it is), (H, W, 3) uint8."""
    from toolbox.preprocess import resize_crop_uint8

    view = resize_crop_uint8(image, meta).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(np.repeat(view, 3, axis=2) if view.shape[2] == 1 else view)


def cam_overlay(view: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The heat map (H, W) in [0, 1] in the jet colours over `view` (H, W, 3) uint8, enlarged
    so that its shorter side is at least OVERLAY_MIN_SIDE."""
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    height, width = view.shape[:2]
    scale = max(1.0, OVERLAY_MIN_SIDE / min(height, width))
    if scale > 1:
        size = (round(width * scale), round(height * scale))
        view = cv2.resize(view, size, interpolation=cv2.INTER_NEAREST)
        heat = cv2.resize(heat.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(view.astype(np.float32) / 255.0, np.clip(heat, 0, 1),
                             use_rgb=True, image_weight=0.55)


class CamMaker:
    """Class activation maps of a loaded PyTorch model with one method on one layer."""

    def __init__(self, loaded: LoadedModel, method: str = DEFAULT_CAM,
                 layer: str | None = None) -> None:
        """Raises:
        ToolboxError: the model is an ONNX file, or no target layer (see find_target_layer).
        UsageError: an unknown method."""
        self.method = cam_method(method)
        if loaded.runtime != "torch":
            raise ToolboxError(f"--cam needs the PyTorch model: {loaded.model_file} runs in "
                               f"{loaded.runtime}, which gives no gradients or activations "
                               "(pass the run folder or its model.safetensors)")
        import pytorch_grad_cam

        self.loaded = loaded
        self.layer = find_target_layer(loaded.model, loaded.meta, layer)
        cls = getattr(pytorch_grad_cam, self.method.class_name)
        self._cam = cls(model=loaded.model, target_layers=[self.layer.module])

    def maps(self, batch, classes: Sequence[int]) -> np.ndarray:
        """(N, H, W) float32 maps in [0, 1] at the input size, for a preprocessed batch and
        one class index per image."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(int(c)) for c in classes]
        return np.asarray(self._cam(input_tensor=batch.to(self.loaded.device), targets=targets),
                          dtype=np.float32)

    def overlays(self, images: Sequence[np.ndarray], classes: Sequence[int],
                 batch_size: int = 16) -> tuple[list[np.ndarray], np.ndarray]:
        """(overlay per image, (N, H, W) maps) for (H, W, 3) uint8 images as read."""
        import torch

        from toolbox.preprocess import eval_tensor

        pictures, maps = [], []
        meta = self.loaded.meta
        for first in range(0, len(images), batch_size):
            chunk = images[first:first + batch_size]
            batch = torch.stack([eval_tensor(image, meta) for image in chunk])
            heat = self.maps(batch, classes[first:first + batch_size])
            maps.append(heat)
            pictures += [cam_overlay(model_view(image, meta), h)
                         for image, h in zip(chunk, heat, strict=True)]
        shape = (0, *meta.input_size[1:])
        return pictures, (np.concatenate(maps) if maps else np.zeros(shape, np.float32))

    def close(self) -> None:
        """Remove the library's hooks from the model."""
        self._cam.activations_and_grads.release()
