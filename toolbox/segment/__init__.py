"""Semantic segmentation: image/mask data, losses, scores, palettes and overlays, predict and
evaluate services, and the Fashion-MNIST canvas export (the model lives in `toolbox.models`,
the training loop in `toolbox.train`)."""

from toolbox.segment.data import (
    BINARY_CLASSES,
    CLASSES_FILE,
    IMAGES_DIR,
    MASKS_DIR,
    Pair,
    PreparedPairs,
    SegmentSplits,
    load_segment_splits,
    resize_pair,
)
from toolbox.segment.losses import (
    IGNORE_INDEX,
    SEGMENT_LOSSES,
    BinaryDiceLoss,
    SoftmaxDiceLoss,
    build_segment_loss,
)
from toolbox.segment.metrics import (
    SegmentMeter,
    SegmentScores,
    confusion,
    foreground_mean,
    scores,
)

__all__ = [
    "BINARY_CLASSES",
    "CLASSES_FILE",
    "IGNORE_INDEX",
    "IMAGES_DIR",
    "MASKS_DIR",
    "SEGMENT_LOSSES",
    "BinaryDiceLoss",
    "Pair",
    "PreparedPairs",
    "SegmentMeter",
    "SegmentScores",
    "SegmentSplits",
    "SoftmaxDiceLoss",
    "build_segment_loss",
    "confusion",
    "foreground_mean",
    "load_segment_splits",
    "resize_pair",
    "scores",
]
