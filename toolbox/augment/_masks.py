"""Applying one augmenter to an image and its segmentation mask with the same geometry."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import imgaug.augmenters as iaa
    import numpy as np


def augment_with_mask(augmenter: iaa.Augmenter, image: np.ndarray, mask: np.ndarray | None,
                      seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Augment `image` (and `mask`, if given) with `augmenter` re-seeded to `seed`.

    One call for both, so the geometric transforms drawn for the image move the mask too;
    imgaug resamples segmentation maps with nearest neighbour and photometric augmenters leave
    them untouched, so class indices stay class indices.
    """
    augmenter.seed_(seed)
    with warnings.catch_warnings():
        # imgaug calls a few deprecated scikit-image/imageio APIs (PiecewiseAffine,
        # JpegCompression); the warnings say nothing the user can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if mask is None:
            return augmenter(image=image), None
        from imgaug.augmentables.segmaps import SegmentationMapsOnImage

        segmap = SegmentationMapsOnImage(mask, shape=image.shape)
        image_aug, segmap_aug = augmenter(image=image, segmentation_maps=segmap)
        return image_aug, segmap_aug.get_arr().astype(mask.dtype)
