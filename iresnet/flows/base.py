"""The flow convention shared by every layer of iresnet.

A flow layer is a bijection ``f(.; c)`` of ``x`` for every context ``c``, with a tractable
log-determinant:

    forward(x, context=None) -> (y, logdet)   with  y = f(x; c),  logdet = log|det df/dx|  of shape (batch,)
    inverse(y, context=None) -> x             with  x = f^{-1}(y; c)

Composite flows sum log-determinants, invert in reverse order and pass the context on. The
context is a tensor whose first dimension is the batch (labels ``(B,)``, features ``(B, K)``);
layers that do not use it ignore it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from iresnet.lipschitz.conditional import takes_context


__all__ = ["Flow", "FlowSequential", "check_finite", "takes_context"]


class Flow(nn.Module):
    """Base class of flow layers: ``forward(x, context=None) -> (y, logdet)`` and
    ``inverse(y, context=None) -> x``."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class FlowSequential(Flow):
    """Chains flows: ``y = f_n(...f_1(x; c)...; c)`` with ``logdet = sum_i logdet_i``.

    The inverse applies the layers' inverses in reverse order; every layer gets the context.
    """

    def __init__(self, *flows: Flow) -> None:
        super().__init__()
        self.flows = nn.ModuleList(flows)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for flow in self.flows:
            x, ld = flow(x, context)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        for flow in reversed(self.flows):
            y = flow.inverse(y, context)
        return y

    def __len__(self) -> int:
        return len(self.flows)

    def __getitem__(self, i: int) -> Flow:
        return self.flows[i]


def check_finite(x: Tensor, where: str) -> None:
    """Raise a ``ValueError`` naming ``where`` if ``x`` holds NaN or Inf values.

    For the door of a model (:class:`~iresnet.models.FlowModel`), not for layers: the check reads
    the tensor on the host. It is skipped while ``torch.compile`` or ``torch.export`` traces, so
    that a captured graph has no data-dependent branch.
    """
    if torch.compiler.is_compiling():
        return
    if not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{where} received {n_bad} non-finite value(s) (NaN or Inf) in a tensor of shape "
            f"{tuple(x.shape)}; clean the input (e.g. torch.nan_to_num) or check the data pipeline."
        )
