"""Hyper-parameter search behind `tb tune`: Optuna studies whose trials are `tb finetune` runs."""

from toolbox.tune._metric import DEFAULT_METRIC, METRICS, Metric, metric_for
from toolbox.tune._report import BEST_FILE
from toolbox.tune._results import TrialRow, TuneResult, TuneStart
from toolbox.tune._sampling import PRUNERS, SAMPLERS
from toolbox.tune._space import (
    DEFAULT_SPACE,
    FORM,
    SpaceParam,
    default_space,
    parse_param,
    parse_space,
)
from toolbox.tune._storage import open_storage
from toolbox.tune._study import KEEP, TuneSettings, default_study, tune

__all__ = [
    "BEST_FILE",
    "DEFAULT_METRIC",
    "DEFAULT_SPACE",
    "FORM",
    "KEEP",
    "METRICS",
    "PRUNERS",
    "SAMPLERS",
    "Metric",
    "SpaceParam",
    "TrialRow",
    "TuneResult",
    "TuneSettings",
    "TuneStart",
    "default_space",
    "default_study",
    "metric_for",
    "open_storage",
    "parse_param",
    "parse_space",
    "tune",
]
