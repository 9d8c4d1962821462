"""A flow for 2-D toy densities, optionally conditional: fully connected residual blocks, exact log-dets."""

from __future__ import annotations

from iresnet.logdet import ExactLogDet
from iresnet.models.base import FlowModel
from iresnet.models.blocks import Activation, fc_branch, feature_mlp, residual_stack
from iresnet.models.priors import ConditionalGaussian, StandardNormal
from iresnet.models.residual_flow import PriorFactory


class ToyFlow(FlowModel):
    """``n_blocks`` MLP residual blocks on ``x: (B, dim)``; the exact logdet is cheap in 2-D.

    Args:
        logdet: defaults to :class:`ExactLogDet`; pass a series estimator to compare.
        actnorm: follow every block with ``ActNorm`` (off by default: toy data are already scaled).
        prior: a factory ``dim -> prior``; None: standard normal, or with ``context_features`` a
            Gaussian whose mean and scale are an MLP of the context.
        context_features: a conditional flow ``p(x | c)`` on context features ``c: (B, K)``: an
            MLP of ``c`` (``context_hidden`` wide) shifts every hidden layer of every branch,
            which keeps each branch Lipschitz below ``coeff`` in ``x`` for every ``c``.
    """

    def __init__(
        self,
        dim: int = 2,
        n_blocks: int = 10,
        hidden: int = 128,
        hidden_layers: int = 3,
        activation: Activation = "lipswish",
        coeff: float = 0.9,
        n_power_iterations: int = 1,
        logdet=None,
        inverse=None,
        actnorm: bool = False,
        prior: PriorFactory | None = None,
        context_features: int | None = None,
        context_hidden: int = 64,
    ) -> None:
        logdet = logdet if logdet is not None else ExactLogDet()
        context = feature_mlp(context_features, context_hidden) if context_features else None
        branches = [
            fc_branch(dim, hidden, hidden_layers, activation, coeff, n_power_iterations, preact=False, context=context)
            for _ in range(n_blocks)
        ]
        if prior is None:
            prior = (lambda d: ConditionalGaussian(d, context_features, context_hidden)) if context else StandardNormal
        super().__init__(residual_stack(branches, dim, logdet, inverse, actnorm), prior(dim), input_shape=(dim,))
        self.dim = dim
        self.context_features = context_features
