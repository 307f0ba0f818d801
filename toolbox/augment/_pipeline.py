"""From a spec (preset name, inline text or pipeline file) to a checked, seeded imgaug pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from toolbox.augment._presets import PRESETS
from toolbox.augment._registry import check_runs, instantiate_pipeline, resolve_pipeline
from toolbox.augment._spec import (
    FILE_SUFFIXES,
    AugmentSpecError,
    Pipeline,
    load_pipeline_file,
    parse_inline,
)
from toolbox.fileio import is_file

if TYPE_CHECKING:
    import imgaug.augmenters as iaa


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
    elif is_file(text):
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
