"""imgaug pipelines from specs (presets, inline text, YAML/JSON files) and a folder runner.

The Python API beside `tb augment`:

    from toolbox.augment import build_augmenter, augment_folder
    seq = build_augmenter("medium", seed=0)             # a preset
    seq = build_augmenter("Fliplr(0.5); Affine(rotate=(-25, 25))")
    seq = build_augmenter("examples/pipelines/heavy.yaml")
    report = augment_folder("imgs", "out", spec="light", seed=1, workers=2)

Nothing here imports imgaug until a pipeline is built, so importing the package is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from toolbox.augment._masks import augment_with_mask
from toolbox.augment._presets import DEFAULT_PRESET, PRESETS
from toolbox.augment._registry import (
    AugmenterInfo,
    ParamInfo,
    augmenter_names,
    check_runs,
    get_augmenter_info,
    instantiate_pipeline,
    list_augmenters,
    resolve_pipeline,
)
from toolbox.augment._run import AugmentReport, SkippedFile, augment_folder
from toolbox.augment._spec import (
    FILE_SUFFIXES,
    AugmentSpecError,
    Pipeline,
    Step,
    load_pipeline_file,
    parse_inline,
    pipeline_from_data,
    pipeline_to_yaml,
)

if TYPE_CHECKING:
    import imgaug.augmenters as iaa

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "AugmentReport",
    "AugmentSpecError",
    "AugmenterInfo",
    "ParamInfo",
    "Pipeline",
    "SkippedFile",
    "Step",
    "augment_folder",
    "augment_with_mask",
    "augmenter_names",
    "build_augmenter",
    "build_pipeline",
    "get_augmenter_info",
    "is_spec_file",
    "list_augmenters",
    "load_spec",
    "pipeline_from_data",
    "pipeline_to_yaml",
]


def is_spec_file(spec: str | Path) -> bool:
    """True when `spec` names a pipeline file (by its .yaml/.yml/.json suffix)."""
    text = str(spec).strip()
    return "(" not in text and text.lower().endswith(FILE_SUFFIXES)


def load_spec(spec: str | Path) -> Pipeline:
    """Parse and validate a spec: a preset name, a pipeline file path, or inline text.

    The result is resolved (every step bound to its parameter names) and checked against the
    registry, but no augmenter is built and no image is read.

    Raises:
        AugmentSpecError: the spec is unparsable, names an unknown augmenter or parameter
            (with close matches), or misses a required parameter; the message names the item.
    """
    text = str(spec).strip()
    if not text:
        raise AugmentSpecError("empty pipeline spec",
                               f"use a preset ({', '.join(PRESETS)}), an inline spec or a file")
    if text in PRESETS:
        parsed = Pipeline(tuple(parse_inline(PRESETS[text])), None, f"preset {text}")
    elif is_spec_file(text):
        parsed = load_pipeline_file(text)
    elif Path(text).is_file():
        raise AugmentSpecError(f"pipeline file {text} must end in .yaml, .yml or .json")
    elif text.isidentifier() and text.lower() in PRESETS:
        raise AugmentSpecError(f"unknown preset '{text}'",
                               f"presets are lower-case: {', '.join(PRESETS)}")
    else:
        parsed = Pipeline(tuple(parse_inline(text)), None, "inline")
    return resolve_pipeline(parsed)


def build_pipeline(pipeline: Pipeline, seed: int | None = None, check: bool = True
                   ) -> iaa.Sequential:
    """The `iaa.Sequential` for a loaded pipeline, seeded with `seed` (else the file's seed).

    With `check`, it is also run once on a small synthetic image so bad values that imgaug
    only notices while augmenting fail here, before any real image is read.
    """
    augmenter = instantiate_pipeline(pipeline)
    if check:
        check_runs(augmenter, pipeline.source or "the pipeline")
    seed = seed if seed is not None else pipeline.seed
    if seed is not None:
        augmenter.seed_(int(seed))
    return augmenter


def build_augmenter(spec: str | Path, seed: int | None = None) -> iaa.Augmenter:
    """An imgaug augmenter from a preset name (light, medium, heavy), an inline spec such as
    `"Fliplr(0.5); Affine(rotate=(-25, 25))"`, or a .yaml/.yml/.json pipeline file.

    Args:
        spec: the pipeline.
        seed: seeds the whole augmenter tree (reproducible); a file's `seed:` is used when
            this is None; otherwise imgaug's global random state decides.

    Raises:
        AugmentSpecError (a ToolboxError): the message names the bad item (unknown augmenter
            with close matches, unknown parameter with the valid ones, bad value).

    Note: a copy sent to DataLoader worker processes carries the same RNG state in every
    worker; re-seed each one (`augmenter.seed_(base_seed + worker_id)` in `worker_init_fn`)
    or they all draw the same augmentations.
    """
    return build_pipeline(load_spec(spec), seed=seed)
