"""Pictures of out-of-distribution scores: each score's histogram for both sets, and ROC curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import roc_curve

TITLES = {"nll": "negative log-likelihood (bits)", "complexity": "NLL - PNG length (bits)",
          "typicality": "|bits/dim - typical|"}  # fmt: skip


def score_histogram(ax, inliers: np.ndarray, outliers: np.ndarray, score: str, names: tuple[str, str]) -> None:
    """Both sets' values of one score on ``ax``, as overlaid density histograms on shared bins."""
    bins = np.histogram_bin_edges(np.r_[inliers, outliers], bins=50)
    ax.hist(inliers, bins=bins, density=True, alpha=0.6, label=f"{names[0]} (in, n={len(inliers)})")
    ax.hist(outliers, bins=bins, density=True, alpha=0.6, label=f"{names[1]} (OOD, n={len(outliers)})")
    ax.set_xlabel(TITLES.get(score, score))
    ax.set_ylabel("density")
    ax.legend(fontsize=8)


def roc_plot(ax, scores_in: dict[str, np.ndarray], scores_out: dict[str, np.ndarray]) -> None:
    """Every score's ROC curve on ``ax`` (positive: out-of-distribution)."""
    for score in scores_in:
        fpr, tpr = roc_curve(scores_in[score], scores_out[score])
        ax.plot(fpr, tpr, label=score)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate (in-distribution flagged)")
    ax.set_ylabel("true positive rate (OOD flagged)")
    ax.legend(fontsize=8)


def save_score_histogram(path: str | Path, inliers: np.ndarray, outliers: np.ndarray, score: str,
                         names: tuple[str, str], title: str = "") -> Path:  # fmt: skip
    """Writes :func:`score_histogram` as a PNG at ``path``."""
    from matplotlib.figure import Figure  # a figure of its own: no pyplot state, no backend chosen

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    score_histogram(ax, inliers, outliers, score, names)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
