"""Autograd plumbing shared by the estimators: when to build a graph, and batched VJPs.

Every estimator needs vector-Jacobian products of ``g`` at ``x`` even when the caller
runs under ``torch.no_grad()`` or ``torch.inference_mode()``, so the graph is always
built inside :func:`graph_scope`; :func:`requires_graph` decides whether the *results*
keep it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn


def requires_graph(fn: Callable[..., Tensor], x: Tensor, context: Tensor | None = None) -> bool:
    """Whether the caller can differentiate the results of ``fn`` at ``x`` (and ``context``).

    True when grad mode is on and ``x``, the context or a parameter of ``fn`` requires grad. A
    plain function (not an ``nn.Module``) may close over tensors that require grad, so with grad
    mode on it is assumed differentiable.
    """
    if not torch.is_grad_enabled():
        return False
    if x.requires_grad or (context is not None and context.requires_grad) or not isinstance(fn, nn.Module):
        return True
    return any(p.requires_grad for p in fn.parameters())


@contextmanager
def graph_scope() -> Iterator[None]:
    """Record autograd graphs even inside ``no_grad`` or ``inference_mode`` callers."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def tracked_input(x: Tensor, keep_graph: bool) -> Tensor:
    """``x`` itself if its graph must be kept, else a fresh leaf to take VJPs with respect to.

    Call inside :func:`graph_scope`. Inference tensors cannot require grad, so they are cloned.
    """
    if keep_graph and x.requires_grad:
        return x
    leaf = x.detach()
    if leaf.is_inference():
        leaf = leaf.clone()
    return leaf.requires_grad_(True)


def vjp(out: Tensor, x: Tensor, u: Tensor, create_graph: bool) -> Tensor:
    """Row vectors times the Jacobian: ``u[p] @ d out / d x`` for every leading index ``p``.

    ``out, x: (B, ...)``; ``u: (P, *out.shape)``; returns ``(P, *x.shape)``. Without a graph
    the rows share one vectorised backward pass (``is_grads_batched``); with ``create_graph``
    they are looped, because a vmapped backward drops the second derivatives of custom
    autograd Functions (such as LipSwish's) without an error. The graph of ``out`` is retained
    so the caller can take further products.
    """
    if u.shape[0] == 1 or create_graph:
        rows = [torch.autograd.grad(out, x, row, retain_graph=True, create_graph=create_graph)[0] for row in u]
        return rows[0].unsqueeze(0) if len(rows) == 1 else torch.stack(rows)
    (rows,) = torch.autograd.grad(out, x, u, retain_graph=True, is_grads_batched=True)
    return rows


def traced_products(
    net: Callable[..., Tensor], x: Tensor, context: Tensor | None = None
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """``net(x)`` (``net(x, context)``) and the map ``u: (P, B, ...) -> (P, B, ...)`` that multiplies
    every ``u[p]`` by the per-sample Jacobian ``J`` in ``x``, for a graph that ``torch.compile`` or
    ``torch.export`` captures (:func:`vjp` calls ``torch.autograd.grad``, which neither traces).

    Under ``torch.compile`` the products are VJPs, ``u J`` (``torch.func.vjp``); ``torch.export``
    captures forward-mode products only, so there they are JVPs, ``J u`` (``torch.func.jvp``).
    Traces ``v^T J^k v`` and determinants are the same either way. The results are
    differentiable by the enclosing autograd (w.r.t. ``x`` and the parameters ``net`` uses).

    A function transform cannot update buffers, so the parametrizations' training-mode updates
    (spectral normalization's power iteration) run first, on their own, and ``net`` then runs
    with them frozen: the same weights as one eager training-mode call.
    """
    update_parametrizations(net)

    def fn(v: Tensor) -> Tensor:
        with frozen_parametrizations(net):
            return call_net(net, v, context)

    if torch.compiler.is_exporting():

        def forward_products(u: Tensor) -> Tensor:
            return torch.stack([torch.func.jvp(fn, (x,), (row,))[1] for row in u])

        return fn(x), forward_products
    out, pullback = torch.func.vjp(fn, x)
    return out, lambda u: torch.stack([pullback(row)[0] for row in u])


def update_parametrizations(net: Callable[..., Tensor]) -> None:
    """Evaluate every parametrized tensor of ``net``'s modules in training mode once, without a
    graph, for the side effects their parametrizations have then; nothing in eval mode."""
    modules = net.modules() if isinstance(net, nn.Module) else ()
    for module in modules:
        if hasattr(module, "parametrizations") and module.training:
            with torch.no_grad():
                for name in module.parametrizations:
                    getattr(module, name)


def batch_dot(u: Tensor, v: Tensor) -> Tensor:
    """Per-sample inner products over all dims after the first two: ``(P, B, ...) -> (P, B)``."""
    return (u * v).flatten(2).sum(-1)


def batch_chunks(n: int, chunk_size: int | None) -> list[slice]:
    """Slices cutting a batch of ``n`` into consecutive chunks of at most ``chunk_size``."""
    size = n if chunk_size is None else chunk_size
    return [slice(start, min(start + size, n)) for start in range(0, n, max(size, 1))]


@contextmanager
def frozen_parametrizations(net: nn.Module) -> Iterator[None]:
    """Run ``net``'s parametrizations (``torch.nn.utils.parametrize``) in eval mode.

    Spectral normalization runs its power iteration in training mode; in eval mode it reads the
    updated vectors without changing them, so a re-evaluation computes the same weights.
    """
    modules = net.modules() if isinstance(net, nn.Module) else ()  # a plain function has none
    containers = [m.parametrizations for m in modules if hasattr(m, "parametrizations")]
    modes = [(m, m.training) for c in containers for m in c.modules()]
    for container in containers:
        container.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def call_net(net: Callable[..., Tensor], x: Tensor, context: Tensor | None) -> Tensor:
    """``net(x)``, or ``net(x, context)`` for a conditional branch (the Jacobian is in ``x`` only)."""
    return net(x) if context is None else net(x, context)


def rows_of(context: Tensor | None, part: slice) -> Tensor | None:
    """The context rows of the samples in ``part`` (None stays None)."""
    return None if context is None else context[part]


def net_chunks(net: nn.Module, n: int, chunk_size: int | None) -> Iterator[slice]:
    """:func:`batch_chunks`, with ``net``'s parametrizations frozen after the first chunk so
    that every chunk sees the weights of the first (one power-iteration step per call)."""
    for i, part in enumerate(batch_chunks(n, chunk_size)):
        with frozen_parametrizations(net) if i else nullcontext():
            yield part
