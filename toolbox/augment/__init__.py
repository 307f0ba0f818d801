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

from toolbox.augment._masks import augment_with_mask
from toolbox.augment._pipeline import build_augmenter, build_pipeline, is_spec_file, load_spec
from toolbox.augment._plan import PIPELINE_FILE
from toolbox.augment._pool import _mp_context as process_context
from toolbox.augment._presets import DEFAULT_PRESET, PRESETS
from toolbox.augment._registry import (
    AugmenterInfo,
    ParamInfo,
    augmenter_names,
    get_augmenter_info,
    list_augmenters,
)
from toolbox.augment._run import AugmentReport, SkippedFile, augment_folder, checked_pipeline
from toolbox.augment._spec import (
    AugmentSpecError,
    Pipeline,
    Step,
    pipeline_from_data,
)
from toolbox.augment._spec_writer import pipeline_to_yaml
from toolbox.augment._worker import derive_seed

__all__ = [
    "DEFAULT_PRESET",
    "PIPELINE_FILE",
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
    "checked_pipeline",
    "derive_seed",
    "get_augmenter_info",
    "is_spec_file",
    "list_augmenters",
    "load_spec",
    "pipeline_from_data",
    "pipeline_to_yaml",
    "process_context",
]
