"""Exponential moving average of a model's weights, with a warmed-up decay: torch's AveragedModel."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def warmed_up_ema_multi_avg_fn(decay: float):
    """``multi_avg_fn`` of :class:`AveragedModel`: ``shadow <- d_t shadow + (1 - d_t) params`` with
    ``d_t = min(decay, (1 + t) / (10 + t))`` and ``t`` the number of updates so far.

    ``get_ema_multi_avg_fn`` holds ``d`` fixed; this is it with the warm-up, read from the
    ``num_averaged`` that :class:`AveragedModel` passes (one host read per update).
    """

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        t = int(num_averaged)
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + t) / (10 + t)))

    return update


class EMA(AveragedModel):
    """Keeps ``shadow = d_t * shadow + (1 - d_t) * params`` with ``d_t = min(decay, (1+t)/(10+t))``,
    or ``d_t = decay`` without ``warmup``; the first update copies the weights.

    torch's :class:`~torch.optim.swa_utils.AveragedModel` with an EMA ``multi_avg_fn``:
    :func:`~torch.optim.swa_utils.get_ema_multi_avg_fn` for a fixed decay, and
    :func:`warmed_up_ema_multi_avg_fn` for the warm-up, which keeps short runs from being judged
    on near-initial weights (with a fixed 0.999 the average of a 300-step run still holds about
    74% of the initialization). Buffers (spectral-norm vectors, ActNorm flags) are copied, not
    averaged (``use_buffers=False``). The shadow copy ``module`` is a submodule, so it is saved in
    checkpoints, with the count ``n_averaged``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}.")
        average = warmed_up_ema_multi_avg_fn(decay) if warmup else get_ema_multi_avg_fn(decay)
        super().__init__(model, multi_avg_fn=average, use_buffers=False)
        self.decay, self.warmup = decay, warmup
        self.module.requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Averages ``model``'s parameters into the shadow copy and copies its buffers."""
        self.update_parameters(model)

    @torch.no_grad()
    def assign(self, model: nn.Module) -> None:
        """Replaces the average by ``model``'s weights and buffers, e.g. to evaluate the raw weights
        with the evaluation estimator; the count ``n_averaged`` is left as it is."""
        for mine, theirs in zip(self.module.parameters(), model.parameters(), strict=True):
            mine.copy_(theirs)
        for mine, theirs in zip(self.module.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)

    def train(self, mode: bool = True) -> EMA:
        # The shadow model only ever evaluates.
        super().train(mode)
        self.module.eval()
        return self
