"""Out-of-distribution detection with a density model: scores and their detection metrics.

Convention: the positive class is the out-of-distribution set, and a higher score means more
anomalous (:mod:`iresnet.ood.metrics`). :mod:`iresnet.ood.scores` turns each image's bits/dim
and compressed length into the three scores: the negative log-likelihood, the complexity-corrected
score of Serrà et al. (2020), and the distance from the training set's typical likelihood.
"""

from .metrics import aupr, auroc, detection_metrics, fpr_at_tpr, roc_curve
from .scores import SCORES, compressed_bits, ood_scores

__all__ = ["SCORES", "aupr", "auroc", "compressed_bits", "detection_metrics", "fpr_at_tpr", "ood_scores", "roc_curve"]
