"""The invertible residual block ``y = x + g(x; c)`` with ``Lip_x(g) < 1``."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from iresnet.flows.base import Flow
from iresnet.inverse import FixedPointInverse, InverseStats
from iresnet.lipschitz.conditional import takes_context
from iresnet.lipschitz.report import unnormalized_layers
from iresnet.logdet import RouletteLogDet


class ResidualBlock(Flow):
    """Invertible residual block ``y = x + net(x)`` (Behrmann et al. 2019), or ``x + net(x, c)``.

    ``net`` must be contractive in ``x`` (``Lip(net) < 1``, e.g. built from spectrally
    normalized layers and 1-Lipschitz activations; with a context, for every fixed context:
    :mod:`iresnet.lipschitz.conditional`); then the map is a bijection (Banach fixed point) and

        log det(I + J_net(x)) = sum_{k>=1} (-1)^(k+1) tr(J_net(x)^k) / k,

    which ``logdet`` estimates. ``inverse`` solves ``x + net(x) = y``. A ``net`` whose ``forward``
    has a ``context`` parameter is called as ``net(x, context)``; other nets ignore the context.

    Args:
        net: the residual branch ``g``; maps ``x: (B, ...)`` to the same shape.
        logdet: a log-determinant estimator ``(net, x, training, context) -> (g(x), logdet)``;
            defaults to the Residual Flows estimator (Russian roulette, Neumann gradient).
        inverse: an inverse solver ``(net, y, context=...) -> (x, InverseStats)``; defaults to
            :class:`FixedPointInverse`.

    After each call the block keeps its own statistics: ``last_logdet`` (detached ``(B,)``) and
    ``last_n_terms`` (series terms of that estimate, None for exact ones) after ``forward``,
    ``last_inverse_stats`` after ``inverse`` (estimators and solvers may be shared by blocks); a
    compiled or exported forward keeps none (the estimator still records its own last call).

    A ``net`` with a linear or convolutional layer on the path of ``x`` without spectral norm
    warns at construction, naming the layer: nothing then bounds its Lipschitz constant.
    """

    def __init__(self, net: nn.Module, logdet=None, inverse=None) -> None:
        super().__init__()
        unbounded = unnormalized_layers(net)
        if unbounded:
            warnings.warn(
                f"ResidualBlock: the branch's layer(s) {', '.join(repr(name) for name in unbounded)} have no spectral "
                "norm, so nothing keeps Lip(net) < 1 and the block may not be invertible: wrap each in "
                "iresnet.lipschitz.spectral_norm(layer, coeff=0.97).",
                UserWarning,
                stacklevel=2,
            )
        self.net = net
        self.logdet = logdet if logdet is not None else RouletteLogDet()
        self.solver = inverse if inverse is not None else FixedPointInverse()
        self.conditional = takes_context(net)
        self.last_logdet: Tensor | None = None
        self.last_n_terms: int | None = None
        self.last_inverse_stats: InverseStats | None = None

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        context = context if self.conditional else None
        gx, logdet = self.logdet(self.net, x, training=self.training, context=context)
        # An exported program keeps no Python-side state; a compiled one would make every number of
        # terms the roulette draws a graph of its own by copying it here (the estimator records it).
        if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            self.last_logdet, self.last_n_terms = logdet.detach(), getattr(self.logdet, "last_n_terms", None)
        return x + gx, logdet

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        """Solves ``x + net(x) = y`` (``x + net(x, c) = y``).

        ``y`` may have a wider dtype than the weights (float64 codes for a float32 model): the
        iterates and residuals then stay in ``y``'s precision and only ``net`` runs in its own.
        This removes the float32 rounding floor of ``y - net(x)`` at the cost of a cast.
        """
        context = context if self.conditional else None
        weight = next(self.net.parameters(), None)
        dtype = y.dtype if weight is None else weight.dtype
        # The branch on at most the estimator's chunk of samples at a time (its chunk_size and
        # chunk_pixels bounds), as its graph-free evaluation runs: the feature maps of a chunk stay
        # in the cache, and the process does not return and re-fault their memory every iteration.
        chunk = getattr(self.logdet, "samples_per_chunk", lambda y: None)(y)
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            chunk = None

        def net(x: Tensor, *context: Tensor) -> Tensor:
            if chunk is not None and len(x) > chunk:
                return torch.cat([net(*rows) for rows in zip(*(t.split(chunk) for t in (x, *context)))])
            return self.net(x.to(dtype), *context).to(y.dtype)

        x, self.last_inverse_stats = self.solver(net, y, eps=torch.finfo(dtype).eps, context=context)
        return x
