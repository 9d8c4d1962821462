"""Scoring sets of samples against a dataset's test images, with a classifier cached on disk."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor

from .classifier import DatasetClassifier, train_classifier
from .scores import class_entropy, frechet_distance, gaussian_statistics, recognizability

# Bumped whenever the classifier or its training changes, so that no stale cached file is reused.
CLASSIFIER_VERSION = 1


def _fingerprint(images: Tensor, labels: Tensor, settings: dict) -> str:
    digest = hashlib.sha256(json.dumps({**settings, "version": CLASSIFIER_VERSION}, sort_keys=True).encode())
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().float().contiguous().numpy().tobytes())
    digest.update(labels.detach().cpu().long().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_classifier(
    images: Tensor, labels: Tensor, cache_dir: str | Path, name: str, steps: int = 500, seed: int = 0
) -> DatasetClassifier:
    """The :func:`train_classifier` classifier of ``images (N, C, H, W)`` in ``[0, 1]`` and ``labels``,
    read from ``cache_dir/<name>-<fingerprint>.pt`` when that file exists, else trained and saved there.

    The fingerprint covers the images, the labels, the settings and the classifier's version, so a
    cached file is only ever the classifier these arguments would train.
    """
    num_classes = int(labels.max()) + 1
    settings = {"steps": steps, "seed": seed, "num_classes": num_classes}
    path = Path(cache_dir) / f"{name}-{_fingerprint(images, labels, settings)}.pt"
    if path.exists():
        return _load(path, tuple(images.shape[1:]), num_classes)
    classifier = train_classifier(images, labels, num_classes, steps=steps, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"state_dict": classifier.state_dict(), "settings": settings}, partial)
    os.replace(partial, path)  # whole or absent, even if two processes train it at once
    return classifier


def _load(path: Path, input_shape: tuple[int, int, int], num_classes: int) -> DatasetClassifier:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        with torch.device("meta"):  # no initialization: it would draw from the global random stream
            classifier = DatasetClassifier(input_shape, num_classes)
        classifier.load_state_dict(saved["state_dict"], assign=True)
    except Exception as err:
        raise ValueError(
            f"the cached sample-quality classifier {str(path)!r} could not be read ({type(err).__name__}); "
            "delete it and it will be trained again (under a minute)."
        ) from err
    return classifier.eval()


class SampleScorer:
    """Scores a set of images as samples of a dataset, beside the test images' own scores (the ceiling).

    The test images are split in two halves by a fixed random draw: one gives the reference
    statistics of the Fréchet distance, the other stands in for samples in the ceiling, so that
    samples and ceiling are both compared with images they do not contain, at the same set size
    ``n`` (the distance's small-sample bias is then the same for both).

    Args:
        classifier: a trained :class:`DatasetClassifier`.
        test_images: ``(N, C, H, W)`` in ``[0, 1]``; ``test_labels``: ``(N,)`` (for the classifier's
            accuracy, reported with the ceiling), optional.
        threshold: the class probability from which a sample counts as recognizable.
    """

    def __init__(
        self, classifier: DatasetClassifier, test_images: Tensor, test_labels: Tensor | None = None, threshold: float = 0.9
    ) -> None:
        if len(test_images) < 4:
            raise ValueError(f"SampleScorer needs at least 4 test images, got {len(test_images)}.")
        self.classifier, self.threshold = classifier, threshold
        probs, features = classifier.predict(test_images)
        halves = torch.randperm(len(test_images), generator=torch.Generator().manual_seed(0)).chunk(2)
        self.reference = gaussian_statistics(features[halves[0]])
        self._held_out = test_images[halves[1]]
        self.accuracy = None if test_labels is None else float((probs.argmax(-1) == test_labels.cpu()).double().mean())

    @classmethod
    def from_datamodule(
        cls, datamodule, cache_dir: str | Path, steps: int = 500, threshold: float = 0.9
    ) -> SampleScorer:
        """The scorer of an image datamodule's samples: its classifier trained on (or cached for) the
        training split (``steps`` batches), its test split as the reference."""
        if not hasattr(datamodule, "dequantized"):
            raise ValueError(
                f"sample scores need labelled images; {type(datamodule).__name__} has none. Use an image "
                "dataset (data=mnist5k, mnist, fashion_mnist or cifar10) or drop score=true."
            )
        train, test = datamodule.dequantized("train"), datamodule.dequantized("test")
        classifier = cached_classifier(train.inputs, train.labels, cache_dir, type(datamodule).__name__, steps)
        return cls(classifier, test.inputs, test.labels, threshold)

    def score(self, images: Tensor) -> dict[str, float]:
        """``n``, ``recognizability``, ``class_entropy`` (nats), ``class_entropy_ratio`` (of its
        maximum ``log(classes)``) and ``frechet_distance`` to the test images of ``images (n, C, H, W)``."""
        if len(images) < 2:
            raise ValueError(f"scoring needs at least 2 images, got {len(images)}.")
        if not torch.isfinite(images).all():
            raise ValueError("the images to score hold NaN or infinite values; check the model's inverse (or its samples).")
        probs, features = self.classifier.predict(images)
        entropy = class_entropy(probs)
        return {
            "n": len(images),
            "recognizability": recognizability(probs, self.threshold),
            "class_entropy": entropy,
            "class_entropy_ratio": entropy / math.log(probs.shape[-1]),
            "frechet_distance": frechet_distance(gaussian_statistics(features), self.reference),
        }

    def report(self, samples: Tensor) -> dict[str, dict[str, float]]:
        """``{"samples": ..., "test_images": ...}``: the scores of ``samples`` and of as many held-out
        test images (all of them if fewer), the ceiling."""
        ceiling = self.score(self._held_out[: len(samples)])
        if self.accuracy is not None:
            ceiling["classifier_accuracy"] = self.accuracy
        return {"samples": self.score(samples), "test_images": ceiling}
