"""The augmenters `tb augment` exposes, read from `imgaug.augmenters`, and the pipeline factory.

Every `imgaug.augmenters` class is offered except the few in `_HIDDEN` (abstract, deprecated,
debugging, or needing Python objects that a spec cannot write). Parameters and defaults come
from the class signatures, so `--list`, validation and the factory cannot drift apart.
Augmenters with required parameters carry an `example` that `--list` shows and the augmenter
sweep test runs.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolbox.augment._spec import (
    CHILD_PARAMS,
    AugmentSpecError,
    Pipeline,
    Step,
    parse_inline,
)
from toolbox.augment._spec_writer import format_value
from toolbox.errors import suggest

if TYPE_CHECKING:
    import imgaug.augmenters as iaa

# Not offered, with the reason: a spec that names one is refused with it.
_HIDDEN = {
    "Augmenter": "abstract base class",
    "Lambda": "needs Python functions",
    "AssertLambda": "needs Python functions",
    "AssertShape": "a debugging check, not an augmentation",
    "SaveDebugImageEveryNBatches": "writes debug files",
    "Noop": "a deprecated alias of Identity; use Identity()",
    "AffineCv2": "deprecated; use Affine(backend='cv2')",
    "ClipCBAsToImagePlanes": "acts on bounding boxes/keypoints only",
    "RemoveCBAsByOutOfImageFraction": "acts on bounding boxes/keypoints only",
    "BlendAlphaBoundingBoxes": "needs bounding boxes",
    "BlendAlphaSegMapClassIds": "needs segmentation maps as blend masks",
    "BlendAlphaMask": "needs a mask-generator object",
    "Voronoi": "needs a point-sampler object; use UniformVoronoi or RegularGridVoronoi",
    "ReplaceElementwise": "needs stochastic-parameter objects; use Dropout, Salt, Pepper",
    "CloudLayer": "building block of Clouds/Fog",
    "RainLayer": "building block of Rain",
    "SnowflakesLayer": "building block of Snowflakes",
}

# Examples for augmenters whose signature has required parameters (or that do nothing
# without children). `--list` shows them; the sweep test runs them.
_EXAMPLES = {
    "BlendAlpha": "BlendAlpha(factor=(0.0, 1.0), foreground=Grayscale(1.0))",
    "BlendAlphaCheckerboard": "BlendAlphaCheckerboard(nb_rows=(2, 6), nb_cols=(2, 6), "
                              "foreground=AddToHue((-100, 100)))",
    "BlendAlphaElementwise": "BlendAlphaElementwise((0.0, 1.0), foreground=Add(100))",
    "BlendAlphaFrequencyNoise": "BlendAlphaFrequencyNoise(foreground=EdgeDetect(1.0))",
    "BlendAlphaHorizontalLinearGradient": "BlendAlphaHorizontalLinearGradient("
                                          "foreground=AddToHue((-100, 100)))",
    "BlendAlphaRegularGrid": "BlendAlphaRegularGrid(nb_rows=(4, 6), nb_cols=(1, 4), "
                             "foreground=Multiply(0.0))",
    "BlendAlphaSimplexNoise": "BlendAlphaSimplexNoise(foreground=EdgeDetect(1.0))",
    "BlendAlphaSomeColors": "BlendAlphaSomeColors(foreground=Grayscale(1.0))",
    "BlendAlphaVerticalLinearGradient": "BlendAlphaVerticalLinearGradient("
                                        "foreground=AddToHue((-100, 100)))",
    "CenterCropToAspectRatio": "CenterCropToAspectRatio(1.5)",
    "CenterCropToFixedSize": "CenterCropToFixedSize(width=64, height=64)",
    "CenterCropToMultiplesOf": "CenterCropToMultiplesOf(width_multiple=10, height_multiple=6)",
    "CenterCropToPowersOf": "CenterCropToPowersOf(width_base=3, height_base=2)",
    "CenterPadToAspectRatio": "CenterPadToAspectRatio(1.5)",
    "CenterPadToFixedSize": "CenterPadToFixedSize(width=256, height=256)",
    "CenterPadToMultiplesOf": "CenterPadToMultiplesOf(width_multiple=10, height_multiple=6)",
    "CenterPadToPowersOf": "CenterPadToPowersOf(width_base=3, height_base=2)",
    "ChangeColorspace": "ChangeColorspace(to_colorspace='HSV')",
    "CropToAspectRatio": "CropToAspectRatio(2.0)",
    "CropToFixedSize": "CropToFixedSize(width=64, height=64)",
    "CropToMultiplesOf": "CropToMultiplesOf(width_multiple=10, height_multiple=6)",
    "CropToPowersOf": "CropToPowersOf(width_base=3, height_base=2)",
    "KeepSizeByResize": "KeepSizeByResize(Crop((20, 40), keep_size=False))",
    "OneOf": "OneOf([Fliplr(1.0), Flipud(1.0)])",
    "PadToAspectRatio": "PadToAspectRatio(1.5)",
    "PadToFixedSize": "PadToFixedSize(width=256, height=256)",
    "PadToMultiplesOf": "PadToMultiplesOf(width_multiple=10, height_multiple=6)",
    "PadToPowersOf": "PadToPowersOf(width_base=3, height_base=2)",
    "Resize": "Resize({'height': 64, 'width': 96})",
    "Sequential": "Sequential([Fliplr(0.5), GaussianBlur((0, 1.0))], random_order=True)",
    "SomeOf": "SomeOf((1, 2), [Fliplr(1.0), Flipud(1.0), Invert(1.0)])",
    "Sometimes": "Sometimes(0.5, GaussianBlur(sigma=(0, 3)))",
    "WithBrightnessChannels": "WithBrightnessChannels(Add((-50, 50)))",
    "WithChannels": "WithChannels(0, Add((10, 100)))",
    "WithColorspace": "WithColorspace(to_colorspace='HSV', children=WithChannels(0, Add(20)))",
    "WithHueAndSaturation": "WithHueAndSaturation(WithChannels(0, Add((0, 50))))",
    "WithPolarWarping": "WithPolarWarping(CropAndPad(percent=(-0.1, 0.1)))",
}

# Text parameters that imgaug checks only once an image is augmented, deep in OpenCV (a typo
# there ends in "OpenCV(4.x) error: (-5:Bad argument) in function 'warpAffine'"): the values
# each accepts, from imgaug's documentation, checked up front. A test runs every value.
_TEXT_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    **{(name, "mode"): ("constant", "edge", "symmetric", "reflect", "wrap")
       for name in ("Affine", "ScaleX", "ScaleY", "TranslateX", "TranslateY", "Rotate",
                    "ShearX", "ShearY", "PiecewiseAffine")},
    ("PerspectiveTransform", "mode"): ("constant", "replicate"),
    ("ElasticTransformation", "mode"): ("constant", "nearest", "reflect", "wrap"),
    ("Affine", "backend"): ("auto", "skimage", "cv2"),
}

# Modules whose augmenters move pixels (and so move masks with them); the rest change
# colours/values only and leave segmentation masks alone.
_GEOMETRIC_MODULES = frozenset({"geometric", "flip", "size"})
_SKIP_PARAMS = frozenset({"seed", "name", "random_state", "deterministic"})


@dataclass(frozen=True)
class ParamInfo:
    """One constructor parameter: its name and default (None when required)."""

    name: str
    default: str | None  # inline-spec text of the default; None when required
    required: bool


@dataclass(frozen=True)
class AugmenterInfo:
    """One exposed augmenter: the registry entry that `--list` and the factory share."""

    name: str
    group: str  # the imgaug module it lives in: arithmetic, geometric, blur, ...
    summary: str
    params: tuple[ParamInfo, ...]
    geometric: bool  # moves pixels, so masks are transformed too
    container: bool  # takes child augmenters
    example: str  # an inline spec that runs: `Name()` unless parameters are required


@functools.cache
def _classes() -> dict[str, type]:
    import imgaug.augmenters as iaa

    classes = {name: obj for name, obj in vars(iaa).items()
               if inspect.isclass(obj) and issubclass(obj, iaa.Augmenter)
               and name not in _HIDDEN}
    # PIL-like augmenters (what RandAugment is built from) live in a sub-module: pillike.X.
    classes.update({f"pillike.{name}": obj for name, obj in vars(iaa.pillike).items()
                    if inspect.isclass(obj) and issubclass(obj, iaa.Augmenter)
                    and not name.startswith("_") and obj.__module__ == iaa.pillike.__name__})
    return classes


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""


@functools.cache
def _info(name: str) -> AugmenterInfo:
    cls = _classes()[name]
    params = []
    for pname, p in inspect.signature(cls).parameters.items():
        if pname in _SKIP_PARAMS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        required = p.default is inspect.Parameter.empty
        params.append(ParamInfo(pname, None if required else format_value(p.default), required))
    return AugmenterInfo(
        name=name,
        group=cls.__module__.rsplit(".", 1)[-1],
        summary=_summary(cls),
        params=tuple(params),
        geometric=(cls.__module__.rsplit(".", 1)[-1] in _GEOMETRIC_MODULES
                   or name == "pillike.Affine"),
        container=any(p.name in CHILD_PARAMS for p in params),
        example=_EXAMPLES.get(name, f"{name}()"),
    )


def list_augmenters() -> list[AugmenterInfo]:
    """Every exposed augmenter, sorted by name."""
    return [_info(name) for name in sorted(_classes())]


def augmenter_names() -> list[str]:
    """The names `tb augment` accepts."""
    return sorted(_classes())


def get_augmenter_info(name: str) -> AugmenterInfo:
    """The registry entry for `name`; raises AugmentSpecError with the reason for an augmenter
    imgaug has but tb does not offer, and with close matches for an unknown name."""
    if name in _HIDDEN:
        raise AugmentSpecError(f"augmenter '{name}' is not offered: {_HIDDEN[name]}",
                               "see `tb augment --list` for the ones that are")
    if name not in _classes():
        matches = suggest(name, _classes())
        hint = f"did you mean: {', '.join(matches)}? " if matches else ""
        raise AugmentSpecError(f"unknown augmenter '{name}'",
                               f"{hint}see `tb augment --list`".strip())
    return _info(name)


# ------------------------------------------------------------------------------ resolving
def _where_error(step: Step, exc: AugmentSpecError) -> AugmentSpecError:
    where = step.where or step.name
    return AugmentSpecError(f"{where}: {exc.message}", exc.hint)


def resolve_step(step: Step) -> Step:
    """Check a step against its augmenter's signature; return it with keyword arguments only.

    Raises:
        AugmentSpecError: unknown augmenter (with close matches), unknown parameter (with the
            valid ones), too many positional arguments, or a missing required parameter.
    """
    try:
        info = get_augmenter_info(step.name)
    except AugmentSpecError as exc:
        raise _where_error(step, exc) from None
    names = [p.name for p in info.params]
    valid = ", ".join(names) or "(none)"
    if len(step.args) > len(names):
        raise AugmentSpecError(
            f"{step.where or step.name}: {step.name} takes at most {len(names)} positional "
            f"argument(s), got {len(step.args)}", f"its parameters are: {valid}")
    bound: dict[str, Any] = dict(zip(names, step.args, strict=False))
    for key, value in step.kwargs:
        if key not in names:
            matches = suggest(key, names, n=3)
            close = f"did you mean {', '.join(matches)}? " if matches else ""
            raise AugmentSpecError(
                f"{step.where or step.name}: unknown parameter '{key}' for {step.name}",
                f"{close}valid parameters: {valid}")
        if key in bound:
            raise AugmentSpecError(
                f"{step.where or step.name}: parameter '{key}' given twice for {step.name}")
        bound[key] = value
    for key, value in bound.items():
        _check_text_choice(step, key, value)
        _check_children(step, key, value)
    missing = [p.name for p in info.params if p.required and p.name not in bound]
    if missing:
        raise AugmentSpecError(
            f"{step.where or step.name}: {step.name} needs parameter(s) {', '.join(missing)}",
            f"for example: {info.example}")
    resolved = tuple((name, _resolve_value(bound[name])) for name in names if name in bound)
    return Step(step.name, (), resolved, where=step.where)


def _check_text_choice(step: Step, key: str, value: Any) -> None:
    """Refuse a text value imgaug would accept now and fail on later (see `_TEXT_CHOICES`),
    naming the augmenter, the argument and the values it takes."""
    allowed = _TEXT_CHOICES.get((step.name, key))
    values = value if isinstance(value, list | tuple) else [value]
    if allowed is None or not all(isinstance(v, str) for v in values):
        return
    bad = [v for v in values if v not in allowed and v != "ALL"]  # ALL: imgaug's "any of them"
    if bad:
        raise AugmentSpecError(
            f"{step.where or step.name}: {step.name} does not take {key}={bad[0]!r}",
            f"{key} takes one of: {', '.join(allowed)} (or a list of them, or 'ALL')")


def _check_children(step: Step, key: str, value: Any) -> None:
    """A container's children are augmenters: anything else imgaug refuses only when it builds
    the pipeline, and a text there would read back from pipeline.yaml as an augmenter's name."""
    items = value if isinstance(value, list | tuple) else [value]
    if key in CHILD_PARAMS and value is not None and not all(isinstance(v, Step) for v in items):
        bad = next(v for v in items if not isinstance(v, Step))
        raise AugmentSpecError(
            f"{step.where or step.name}: {step.name}'s {key} takes augmenters, got {bad!r}",
            f"for example: {get_augmenter_info(step.name).example}")


def _resolve_value(value: Any) -> Any:
    if isinstance(value, Step):
        return resolve_step(value)
    if isinstance(value, list):
        return [_resolve_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve_value(v) for v in value)
    if isinstance(value, dict):
        return {k: _resolve_value(v) for k, v in value.items()}
    return value


def resolve_pipeline(pipeline: Pipeline) -> Pipeline:
    """The pipeline with every step checked and bound to parameter names."""
    return Pipeline(tuple(resolve_step(s) for s in pipeline.steps), pipeline.seed,
                    pipeline.source)


# ------------------------------------------------------------------------------- building
def _instantiate_value(value: Any) -> Any:
    if isinstance(value, Step):
        return instantiate_step(value)
    if isinstance(value, list):
        return [_instantiate_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_instantiate_value(v) for v in value)
    if isinstance(value, dict):
        return {k: _instantiate_value(v) for k, v in value.items()}
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def instantiate_step(step: Step) -> iaa.Augmenter:
    """The imgaug augmenter for a resolved step; a bad value raises AugmentSpecError."""
    cls = _classes()[step.name]
    # A single child is passed as a one-item list. imgaug keeps a container augmenter given
    # directly as `then_list`/`children` (OneOf, SomeOf and Sequential are lists) as the
    # children list itself, and then never re-seeds that container's own RNG in `seed_`, so
    # e.g. `Sometimes(0.5, OneOf([...]))` would pick children from the global RNG.
    kwargs = {k: _instantiate_value([v] if k in CHILD_PARAMS and isinstance(v, Step) else v)
              for k, v in step.kwargs}
    try:
        return cls(**kwargs)
    except AugmentSpecError:
        raise
    except Exception as exc:  # imgaug validates with asserts, ValueError and TypeError
        shown = ", ".join(f"{k}={format_value(v)}" for k, v in step.kwargs)
        raise AugmentSpecError(
            f"{step.where or step.name}: bad value in {step.name}({shown}): {_first_line(exc)}",
            f"see the parameters of {step.name} in `tb augment --list`") from None


def instantiate_pipeline(pipeline: Pipeline) -> iaa.Sequential:
    """An `iaa.Sequential` of the resolved pipeline's steps."""
    import imgaug.augmenters as iaa

    return iaa.Sequential([instantiate_step(s) for s in pipeline.steps])


def check_runs(augmenter: iaa.Augmenter, source: str = "the pipeline") -> None:
    """Run the augmenter once on a small synthetic image so value errors that imgaug only
    raises while augmenting surface before any real image is read."""
    import numpy as np

    probe = augmenter.deepcopy()
    probe.seed_(0)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    try:
        probe(image=image)
    except Exception as exc:
        raise AugmentSpecError(f"{source} fails on a test image: {_first_line(exc)}",
                               "check the values of its augmenters in `tb augment --list`"
                               ) from None


def parse_example(name: str) -> Step:
    """The resolved step of an augmenter's `--list` example."""
    info = get_augmenter_info(name)
    return resolve_step(parse_inline(info.example)[0])
