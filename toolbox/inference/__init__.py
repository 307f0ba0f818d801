"""Using trained models: batched prediction on image files and evaluation on labelled data."""

from toolbox.inference._loading import LoadedModel, load_for_inference, predict_batches
from toolbox.inference.evaluate import EvalResult, evaluate
from toolbox.inference.metrics import ClassScore, ConfusionCounter, averages, class_scores
from toolbox.inference.predict import (
    Guess,
    NothingPredicted,
    Prediction,
    PredictionRate,
    PredictResult,
    predict_images,
)

__all__ = [
    "ClassScore",
    "ConfusionCounter",
    "EvalResult",
    "Guess",
    "LoadedModel",
    "NothingPredicted",
    "PredictResult",
    "Prediction",
    "PredictionRate",
    "averages",
    "class_scores",
    "evaluate",
    "load_for_inference",
    "predict_batches",
    "predict_images",
]
