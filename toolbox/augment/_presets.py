"""The named pipelines `--preset light|medium|heavy` (also in examples/pipelines/*.yaml)."""

from __future__ import annotations

# Inline specs, so a preset reads exactly like what a user would type after `--aug`.
# light: label-safe tweaks for any photo data set; medium (the default): the imgaug tutorial's
# everyday mix; heavy: strong geometry plus two or three photometric changes in random order.
PRESETS: dict[str, str] = {
    "light": (
        "Fliplr(0.5); "
        "Affine(rotate=(-10, 10), scale=(0.95, 1.05), mode='reflect'); "
        "Sometimes(0.3, LinearContrast((0.9, 1.1)))"
    ),
    "medium": (
        "Fliplr(0.5); "
        "Sometimes(0.5, Crop(percent=(0, 0.1))); "
        "Affine(scale=(0.9, 1.1), translate_percent=(-0.1, 0.1), rotate=(-20, 20), "
        "mode='reflect'); "
        "Sometimes(0.3, GaussianBlur(sigma=(0, 1.0))); "
        "LinearContrast((0.8, 1.2)); "
        "Multiply((0.9, 1.1), per_channel=0.2); "
        "AdditiveGaussianNoise(scale=(0, 7.65))"
    ),
    "heavy": (
        "Fliplr(0.5); "
        "Flipud(0.2); "
        "Sometimes(0.5, CropAndPad(percent=(-0.1, 0.1), pad_mode=['constant', 'edge'])); "
        "Affine(scale=(0.8, 1.2), translate_percent=(-0.2, 0.2), rotate=(-45, 45), "
        "shear=(-16, 16), order=[0, 1], mode=['constant', 'edge']); "
        "SomeOf((2, 3), [OneOf([GaussianBlur(sigma=(0, 3.0)), AverageBlur(k=(2, 7)), "
        "MedianBlur(k=(3, 11))]), Sharpen(alpha=(0, 1.0), lightness=(0.75, 1.5)), "
        "AdditiveGaussianNoise(scale=(0, 12.75), per_channel=0.5), "
        "Dropout((0.01, 0.1), per_channel=0.5), Add((-10, 10), per_channel=0.5), "
        "Multiply((0.5, 1.5), per_channel=0.5), LinearContrast((0.5, 2.0), per_channel=0.5), "
        "Grayscale(alpha=(0.0, 1.0))], random_order=True)"
    ),
}
DEFAULT_PRESET = "medium"
