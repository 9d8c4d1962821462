r"""Conditional residual branches ``g(x; c)`` that stay Lipschitz below ``coeff`` in ``x`` for every ``c``.

The context ``c`` enters as shifts: after a normalized layer, ``h -> h + b(c)`` with ``b`` any
network of the context alone (an embedding of labels, an MLP of features), unconstrained. For a
fixed ``c`` the shift is a translation, an isometry in ``h``, so

    Lip_x(g(.; c)) <= prod_i Lip(layer_i) <= coeff^n < 1

exactly as without a context: every residual block stays a contraction plus the identity in
``x`` (invertible by Banach's theorem, with the same fixed-point rate), and the spectral radius
of ``J_g(x; c) = dg/dx`` stays below ``coeff``, so the log-det power series converges for every
context. Nothing is claimed about ``c``: the flow is a bijection of ``x`` for each fixed ``c``,
which is all a conditional density ``p(x | c)`` needs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from torch import Tensor, nn


# A class's signature never changes: under torch.compile both answers are constants of the graph
# (Dynamo would otherwise trace through the cache below and warn that it cannot see it).
@torch.compiler.assume_constant_result
def takes_context(module: nn.Module) -> bool:
    """Whether ``module`` is called with the context: its ``forward`` has a ``context`` parameter
    (a conditional branch; a prior, which may ignore it)."""
    return _context_parameter(type(module)) is not None


@torch.compiler.assume_constant_result
def needs_context(module: nn.Module) -> bool:
    """Whether ``module`` depends on the context: its ``forward`` has a ``context`` parameter
    without a default (a conditional branch or prior; an unconditional prior takes
    ``context=None`` and ignores it)."""
    parameter = _context_parameter(type(module))
    return parameter is not None and parameter.default is inspect.Parameter.empty


@functools.cache
def _context_parameter(cls: type) -> inspect.Parameter | None:
    # Per class: inspecting a signature costs microseconds, and branches run thousands of times a step.
    return inspect.signature(cls.forward).parameters.get("context")


class ContextShift(nn.Module):
    """``h -> h + b(c)``: adds ``context_net(context)`` to ``h``, broadcast over the dimensions
    after the channels.

    ``h: (B, C, *)``; ``context_net(context): (B, C)``. A translation for every fixed context,
    so 1-Lipschitz in ``h`` whatever ``context_net`` is (it needs no normalization, and
    :func:`~iresnet.lipschitz.lipschitz_report` does not count its layers).
    """

    def __init__(self, context_net: nn.Module) -> None:
        super().__init__()
        self.context_net = context_net

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        if context is None:
            raise ValueError(
                "this conditional branch needs a context: pass context=... (labels or features, one row per "
                "sample) to the flow or model."
            )
        if len(context) != len(h):
            raise ValueError(f"the context has {len(context)} rows for a batch of {len(h)}; give one row per sample.")
        shift = self.context_net(context)
        return h + shift.view(*shift.shape, *([1] * (h.dim() - shift.dim())))

    def lipschitz_bound(self, bound_of: Callable[[nn.Module], float]) -> float:
        """A translation in ``h``: 1, whatever ``context_net`` is."""
        return 1.0


class ConditionalSequential(nn.Sequential):
    """``nn.Sequential`` that passes the context to the layers that take one (:func:`takes_context`).

    ``forward(x, context)``: ``x: (B, ...)``, ``context``: one row per sample. Its Lipschitz bound
    in ``x`` is the product of its layers' (a :class:`ContextShift` counts 1).
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        for layer in self:
            x = layer(x, context) if takes_context(layer) else layer(x)
        return x
