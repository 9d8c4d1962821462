"""Detection metrics of an out-of-distribution score: AUROC, AUPR and the FPR at 95% TPR.

Convention: the positive class is the out-of-distribution set, and a higher score means more
anomalous. ``inliers`` are the scores of the in-distribution images ``(n,)``, ``outliers`` those
of the out-of-distribution images ``(m,)``.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor


def _as_array(scores: Tensor | np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"{name} holds no scores; both sets need at least one image.")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(values)).sum())} non-finite scores (NaN or inf).")
    return values


def _ranked(inliers: Tensor | np.ndarray, outliers: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All scores from highest to lowest, and whether each is an outlier (positive)."""
    s_in, s_out = _as_array(inliers, "inliers"), _as_array(outliers, "outliers")
    scores = np.concatenate([s_in, s_out])
    positive = np.r_[np.zeros(len(s_in), bool), np.ones(len(s_out), bool)]
    order = np.argsort(-scores, kind="stable")
    return scores[order], positive[order]


def _roc_points(inliers: Tensor | np.ndarray, outliers: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, precision)`` at every distinct threshold ``t`` (flagging ``score >= t``), from the
    highest threshold down; tied scores are flagged together."""
    scores, positive = _ranked(inliers, outliers)
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    true_pos = np.cumsum(positive)[last_of_tie]
    false_pos = np.cumsum(~positive)[last_of_tie]
    return false_pos / (~positive).sum(), true_pos / positive.sum(), true_pos / (true_pos + false_pos)


def auroc(inliers: Tensor | np.ndarray, outliers: Tensor | np.ndarray) -> float:
    """Area under the ROC curve: ``P(s_out > s_in) + P(s_out = s_in) / 2`` over all pairs
    (the Mann-Whitney statistic), from average ranks in ``O((n + m) log(n + m))``."""
    s_in, s_out = _as_array(inliers, "inliers"), _as_array(outliers, "outliers")
    scores = np.concatenate([s_in, s_out])
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # Average rank (1-based) of each tie group.
    first = np.searchsorted(sorted_scores, sorted_scores, side="left")
    last = np.searchsorted(sorted_scores, sorted_scores, side="right")
    ranks = np.empty(len(scores))
    ranks[order] = (first + last + 1) / 2
    n, m = len(s_in), len(s_out)
    return float((ranks[n:].sum() - m * (m + 1) / 2) / (n * m))


def aupr(inliers: Tensor | np.ndarray, outliers: Tensor | np.ndarray) -> float:
    """Area under the precision-recall curve with the outliers as positives, as average precision:
    ``sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds from the highest down."""
    _, recall, precision = _roc_points(inliers, outliers)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(inliers: Tensor | np.ndarray, outliers: Tensor | np.ndarray, tpr: float = 0.95) -> float:
    """The share of inliers flagged at the highest threshold that flags at least ``tpr`` of the
    outliers (FPR95 for ``tpr=0.95``)."""
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}.")
    fpr, true_rate, _ = _roc_points(inliers, outliers)
    return float(fpr[np.argmax(true_rate >= tpr - 1e-12)])


def roc_curve(inliers: Tensor | np.ndarray, outliers: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` from ``(0, 0)`` through every distinct threshold to ``(1, 1)``, for plotting."""
    fpr, tpr, _ = _roc_points(inliers, outliers)
    return np.r_[0.0, fpr], np.r_[0.0, tpr]


def detection_metrics(inliers: Tensor | np.ndarray, outliers: Tensor | np.ndarray) -> dict[str, float]:
    """``{"auroc", "aupr", "fpr95"}`` of one score."""
    return {"auroc": auroc(inliers, outliers), "aupr": aupr(inliers, outliers), "fpr95": fpr_at_tpr(inliers, outliers)}


__all__ = ["auroc", "aupr", "detection_metrics", "fpr_at_tpr", "roc_curve"]
