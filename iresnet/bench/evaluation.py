"""Evaluation cost and accuracy: bits/dim of test images, seconds, and swapping block strategies."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from hydra.utils import instantiate
from torch import Tensor

from iresnet.metrics import mean_and_standard_error
from iresnet.models import FlowModel
from iresnet.training import FlowLightningModule


def synchronize(device: torch.device) -> None:
    """Waits for queued GPU work, so that wall-clock times are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spread(total: int, n: int) -> Tensor:
    """Indices of ``n`` of ``total`` items, spread evenly (the mnist5k test split is sorted by
    class, so its first images are all zeros)."""
    return torch.linspace(0, total - 1, min(n, total)).round().long()


def spread_images(loader: Iterable, n: int) -> Tensor:
    """:func:`spread` images of the split of ``loader`` (``(x, y)`` batches, not shuffled)."""
    x = torch.cat([batch[0] for batch in loader])
    return x[spread(len(x), n)]


@contextmanager
def swapped(model: FlowModel, attribute: str, value) -> Iterator[None]:
    """Every residual block of ``model`` has ``block.<attribute> = value`` inside the ``with``
    (its estimator ``logdet`` or its inverse ``solver``); the blocks' own are restored after."""
    blocks = model.residual_blocks()
    saved = [getattr(block, attribute) for block in blocks]
    for block in blocks:
        setattr(block, attribute, value)
    try:
        yield
    finally:
        for block, original in zip(blocks, saved):
            setattr(block, attribute, original)


def eval_estimator(
    module: FlowLightningModule, terms: int | None = None, probes: int | None = None, chunk: int | None = None
):
    """A new instance of the module's evaluation estimator, with ``terms`` exact terms at
    evaluation (roulette), ``probes`` probes and chunks of ``chunk`` samples if given."""
    config = dict(module.hparams.eval_logdet or module.hparams.model["logdet"])
    for key, value in (("eval_exact_terms", terms), ("n_probes", probes), ("chunk_size", chunk)):
        if value is not None:
            config[key] = value
    return instantiate(config)


@torch.no_grad()
def score_images(module: FlowLightningModule, model: FlowModel, x: Tensor, batch_size: int) -> tuple[Tensor, float]:
    """Per-image bits/dim of ``x`` under ``model`` (in its current mode) and the seconds taken."""
    device = next(model.parameters()).device
    synchronize(device)
    start = time.perf_counter()
    scores = [module.score(model.log_prob(chunk.to(device)), chunk).cpu() for chunk in x.split(batch_size)]
    synchronize(device)
    return torch.cat(scores), time.perf_counter() - start


def evaluate(
    module: FlowLightningModule, model: FlowModel, x: Tensor, estimator, batch_size: int
) -> tuple[dict[str, object], Tensor]:
    """Bits/dim ± standard error and seconds of ``model`` on ``x`` with ``estimator``, and the
    per-image scores (for paired comparisons)."""
    with swapped(model, "logdet", estimator):
        scores, seconds = score_images(module, model, x, batch_size)
    mean, se = mean_and_standard_error(scores)
    summary = {
        "estimator": repr(estimator),
        "images": scores.numel(),
        "seconds": seconds,
        "images_per_s": scores.numel() / seconds,
        "bpd": mean,
        "bpd_se": se,
    }
    return summary, scores


def paired_difference(a: Tensor, b: Tensor) -> dict[str, float]:
    """Mean ± standard error of ``a - b`` over the same images (and dequantization noise)."""
    mean, se = mean_and_standard_error(a - b)
    return {"difference": mean, "difference_se": se}
