"""The weighted power series of ``log det(I + J)`` with Hutchinson traces, and its gradient.

For per-sample Jacobians ``J = dg/dx`` with spectral radius below one,

    log det(I + J) = sum_{k>=1} (-1)^(k+1) tr(J^k) / k.

With probes ``v`` (``E[v v^T] = I``) and term weights ``c_k`` (all 1 for truncation,
inverse tail probabilities for Russian roulette) the estimate is

    value = mean_v sum_{k=1}^{n} (-1)^(k+1) c_k / k * v^T J^k v,

where ``v^T J^k`` is one VJP applied to ``v^T J^(k-1)``, so ``n`` terms cost ``n`` VJPs.

Its gradient (``d tr(J^k)/k = tr(J^(k-1) dJ)``) is estimated in one of two ways:

* ``backprop``: differentiate through all ``n`` VJPs (graph memory grows with ``n``);
* ``neumann``: ``d value ~ mean_v w^T dJ v`` with
  ``w = sum_{k=1}^{n} (-1)^(k-1) c_k v^T J^(k-1)`` accumulated from the same, graph-free
  VJPs, so only the one VJP in the *surrogate* ``w^T J v`` is differentiated. The surrogate's
  value is not the estimate; :func:`with_gradient_of` pairs the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from iresnet.logdet._autograd import (
    batch_dot, call_net, graph_scope, net_chunks, rows_of, traced_products, tracked_input, vjp,
)  # fmt: skip
from iresnet.logdet.products import sequential_products

GRAD_MODES = ("backprop", "neumann")


def series_terms(
    g: Tensor,
    x: Tensor,
    probes: Tensor,
    coeffs: Sequence[float],
    create_graph: bool = False,
    neumann: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The estimate ``value: (B,)`` for ``g = net(x)`` (graph attached), and the Neumann row ``w``.

    ``g, x: (B, ...)``; ``probes: (P, B, ...)``; ``coeffs[k-1] = c_k`` sets the number of terms
    ``n = len(coeffs)``. ``value`` is differentiable through every VJP if ``create_graph``.
    ``w: (P, B, ...)`` (or ``None`` unless ``neumann``) is the left vector of the surrogate.
    """
    return product_series(lambda row: vjp(g, x, row, create_graph=create_graph), probes, coeffs, neumann)


def product_series(
    product: Callable[[Tensor], Tensor], probes: Tensor, coeffs: Sequence[float], neumann: bool = False
) -> tuple[Tensor, Tensor | None]:
    """:func:`series_terms` from any map ``product: u -> u J`` of ``(P, B, ...)`` rows."""
    row = probes  # v^T J^(k-1) at the start of iteration k
    neumann_row = 0.0 if neumann else None
    value = 0.0
    for k, c in enumerate(coeffs, start=1):
        if neumann:
            neumann_row = neumann_row + (-1) ** (k - 1) * c * row
        row = product(row)
        value = value + (-1) ** (k + 1) * c / k * batch_dot(row, probes)
    return value.mean(0), neumann_row


def chunked_series_terms(
    net: nn.Module,
    x: Tensor,
    probes: Tensor,
    coeffs: Sequence[float],
    chunk_size: int | None,
    neumann: bool,
    context: Tensor | None = None,
    used: Sequence[tuple[Tensor | None, ...]] | None = None,
) -> tuple[Tensor, Tensor, list[Tensor] | None]:
    """:func:`series_terms` of ``g = net(x)`` (``net(x, context)``) on chunks of at most
    ``chunk_size`` samples, each chunk's graph freed once its VJPs are taken: ``(g(x), value)``
    detached, and the Neumann rows per chunk (``None`` unless ``neumann``). Works under
    ``no_grad`` and ``inference_mode``. ``used``: a sequential branch's layer tensors to compute
    with (:func:`~iresnet.logdet.products.sequential_products`)."""
    g_parts, values, rows = [], [], []
    for part in net_chunks(net, len(x), chunk_size):
        with graph_scope():
            products = None if context is not None else sequential_products(net, x[part], used)
            if products is not None:  # the layers' own adjoints: no graph, no autograd engine
                g, product = products
                value, row = product_series(product, probes[:, part], coeffs, neumann)
            else:
                x_in = tracked_input(x[part], keep_graph=False)
                g = call_net(net, x_in, rows_of(context, part))
                value, row = series_terms(g, x_in, probes[:, part], coeffs, neumann=neumann)
        g_parts.append(g.detach())
        values.append(value.detach())
        rows.append(row)
    return torch.cat(g_parts), torch.cat(values), rows if neumann else None


def neumann_surrogate(g: Tensor, x: Tensor, neumann_row: Tensor, probes: Tensor) -> Tensor:
    """``mean_v w^T J v: (B,)``, whose gradient is the Neumann estimate of ``d logdet``."""
    return batch_dot(vjp(g, x, neumann_row, create_graph=True), probes).mean(0)


def series_logdet(
    g: Tensor, x: Tensor, probes: Tensor, coeffs: Sequence[float], grad: str
) -> tuple[Tensor, Tensor]:
    """Evaluate the series for ``g = net(x)`` (graph attached): returns ``(value, objective)``.

    Shapes as in :func:`series_terms`. ``objective: (B,)`` is what to differentiate for the
    requested ``grad`` mode (``value`` itself for ``backprop``, the Neumann surrogate
    otherwise); ``value`` carries a graph only in ``backprop`` mode.
    """
    backprop = grad == "backprop"
    value, neumann_row = series_terms(g, x, probes, coeffs, create_graph=backprop, neumann=not backprop)
    if backprop:
        return value, value
    return value, neumann_surrogate(g, x, neumann_row, probes)


def traced_series_logdet(
    net: nn.Module, x: Tensor, probes: Tensor, coeffs: Sequence[float], grad: str, context: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(g(x), logdet)`` as :func:`series_logdet` and :func:`with_gradient_of` give them, from
    the products of :func:`~iresnet.logdet._autograd.traced_products`: what ``torch.compile``
    and ``torch.export`` capture in one graph. Shapes as in :func:`series_terms`."""
    g, product = traced_products(net, x, context)
    neumann = grad == "neumann"
    # With the Neumann gradient the series' products carry no graph: only the surrogate's does.
    terms = (lambda row: product(row).detach()) if neumann else product
    value, neumann_row = product_series(terms, probes, coeffs, neumann)
    if not neumann:
        return g, value
    return g, with_gradient_of(value, batch_dot(product(neumann_row), probes).mean(0))


def with_gradient_of(value: Tensor, objective: Tensor) -> Tensor:
    """A tensor equal to ``value`` whose gradient is the gradient of ``objective``."""
    if objective is value:
        return value
    return value.detach() + (objective - objective.detach())
