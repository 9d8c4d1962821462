r"""Scores of a set of images under a classifier: recognizability, class entropy, Fréchet distance."""

from __future__ import annotations

import torch
from torch import Tensor


def recognizability(probs: Tensor, threshold: float = 0.9) -> float:
    """The fraction of images whose most likely class has probability ``>= threshold``;
    ``probs: (N, classes)``."""
    return float((probs.max(-1).values >= threshold).double().mean())


def class_entropy(probs: Tensor) -> float:
    r"""Entropy (nats) of the histogram of predicted classes, ``-sum_c f_c log f_c``, with ``f_c``
    the fraction of images whose most likely class is ``c``; at most ``log(classes)``, reached by a
    balanced set (every mode covered equally)."""
    counts = torch.bincount(probs.argmax(-1), minlength=probs.shape[-1]).double()
    f = counts[counts > 0] / counts.sum()
    return float(-(f * f.log()).sum())


def gaussian_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(F,)`` and covariance ``(F, F)`` (unbiased) of ``features: (N, F)``, in float64."""
    if features.dim() != 2 or len(features) < 2:
        raise ValueError(f"gaussian_statistics needs features (N >= 2, F), got shape {tuple(features.shape)}.")
    f = features.double()
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> float:
    r"""Fréchet distance between Gaussians ``a = (mu_a, S_a)`` and ``b``:

        |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2}),

    the symmetric form of ``tr (S_a S_b)^{1/2}``, whose eigenvalues are real and non-negative, so
    that no complex square root is needed. Zero exactly when the two agree."""
    (mu_a, cov_a), (mu_b, cov_b) = a, b
    root_a = _psd_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(float(value), 0.0)

