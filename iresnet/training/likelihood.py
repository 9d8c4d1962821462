r"""Importance-weighted bounds on the discrete log-likelihood, and how far estimator noise biases them.

For discrete data ``x`` and a proposal ``q(u | x)`` of dequantization noise (uniform, or a
model's :class:`~iresnet.models.dequantization.VariationalDequantizer`), each draw gives
``w_k = p((x + u_k) / n) / q(u_k | x)`` and

    L_K = log (1/K sum_k w_k) - D log n  <=  log P(x),

increasing in ``K`` and converging to ``log P(x)`` (Burda et al. 2016). ``K = 1`` is the usual
(uniform or variational) bound. The residual blocks' log-determinants are themselves estimated:
``log w_k`` carries noise ``eps_k`` of variance ``sigma^2``, and for large ``K``
``E[log mean exp(log w + eps)] ~ L_K + sigma^2 / 2``, a bias toward *higher* likelihood (lower
bits/dim) that no longer averages out. :func:`importance_weighted_bpd` measures ``sigma`` per
image (two estimates of the same ``w``) and reports the bound on that bias, ``sigma^2 / 2`` in
nats, ``sigma^2 / (2 D ln 2)`` in bits/dim; the rule (docs/concepts.md) is to evaluate with
enough exact terms and probes that it stays well below the gain of importance weighting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from rich.progress import track
from torch import Tensor

from iresnet.metrics import mean_and_standard_error

# draw j -> the batches (x, y) of the images, dequantized with draw j's noise, always in one order.
Draws = Callable[[int], Iterable[tuple[Tensor, Tensor]]]


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    """``log mean exp`` along ``dim``, without overflow."""
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


@torch.no_grad()
def importance_weighted_bpd(module, draws: Draws, k: int, progress: bool = True) -> dict[str, float]:
    """The importance-weighted bound with ``k`` draws per image under ``module``'s evaluation model,
    in bits/dim, with its standard error over images.

    ``draws(j)`` serves the images dequantized with draw ``j``'s noise (a variational dequantizer
    draws its own). Also returns the single-draw bound of the same draws, the gain, the
    estimator's noise per image ``estimator_std_nats`` and the bias bound it implies.
    """
    if k < 1:
        raise ValueError(f"importance_samples must be a positive integer, got {k}.")
    model = module.prepare_eval_model()
    device = next(model.parameters()).device
    log_w, differences, dims = [], [], None
    for j in track(range(k), description=f"importance-weighted, K={k}", disable=not progress):
        scores = []
        for x, y in draws(j):
            batch = (x.to(device), y.to(device))
            score = module.per_sample_loss(model, batch)["score"].double()
            scores.append(score)
            if j == 0:  # the same draw again: only the estimator's own noise differs
                differences.append(module.per_sample_loss(model, batch)["score"].double() - score)
            dims = x[0].numel()
        log_w.append(torch.cat(scores))
    nats_per_bpd = dims * math.log(2)
    log_w = -torch.stack(log_w).cpu() * nats_per_bpd  # log w_j - D log n, in nats: (k, images)
    iw_bpd, iw_se = mean_and_standard_error(-log_mean_exp(log_w) / nats_per_bpd)
    bound_bpd, bound_se = mean_and_standard_error(-log_w.mean(0) / nats_per_bpd)
    variance = float((torch.cat(differences).cpu() * nats_per_bpd).pow(2).mean() / 2)
    return {
        "importance_samples": k,
        "iw_bpd": iw_bpd,
        "iw_bpd_se": iw_se,
        "bound_bpd": bound_bpd,
        "bound_bpd_se": bound_se,
        "gain_bpd": bound_bpd - iw_bpd,
        "estimator_std_nats": math.sqrt(variance),
        "noise_bias_bound_bpd": variance / 2 / nats_per_bpd,
        "images": log_w.shape[1],
    }


@torch.no_grad()
def per_image_scores(module, draws: Draws, n_draws: int, progress: bool = True) -> tuple[Tensor, Tensor]:
    """Each image's score under ``module``'s evaluation model (bits/dim, or nats/dim for continuous
    data), averaged over ``n_draws`` draws, and its standard error over them: ``(N,)``, ``(N,)``.

    Draw ``j`` dequantizes with ``draws(j)``'s noise and estimates every log-determinant afresh,
    so the standard error ``std_j / sqrt(n_draws)`` covers both; NaN for ``n_draws = 1``.
    """
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"the number of draws per image must be a positive integer, got {n_draws!r}.")
    model = module.prepare_eval_model()
    device = next(model.parameters()).device
    rows = []
    for j in track(range(n_draws), description=f"per-image scores, {n_draws} draws", disable=not progress):
        scores = [module.per_sample_loss(model, (x.to(device), y.to(device)))["score"].double().cpu() for x, y in draws(j)]
        rows.append(torch.cat(scores))
    scores = torch.stack(rows)  # (draws, images)
    se = scores.std(0) / math.sqrt(n_draws) if n_draws > 1 else torch.full_like(scores[0], math.nan)
    return scores.mean(0), se
