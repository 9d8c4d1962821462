"""Sample quality, measured by the project itself and offline: a small classifier trained on the
dataset's training split judges samples by recognizability, class coverage and a Fréchet distance
on its features (an "FID" for this dataset)."""

from .classifier import DatasetClassifier, train_classifier
from .scorer import SampleScorer, cached_classifier
from .scores import class_entropy, frechet_distance, gaussian_statistics, recognizability

__all__ = [
    "DatasetClassifier",
    "SampleScorer",
    "cached_classifier",
    "class_entropy",
    "frechet_distance",
    "gaussian_statistics",
    "recognizability",
    "train_classifier",
]
