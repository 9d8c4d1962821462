"""Autograd plumbing shared by the estimators: when to build a graph, and batched VJPs.

Every estimator needs vector-Jacobian products of ``g`` at ``x`` even when the caller
runs under ``torch.no_grad()`` or ``torch.inference_mode()``, so the graph is always
built inside :func:`graph_scope`; :func:`requires_graph` decides whether the *results*
keep it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def requires_graph(fn: Callable[[Tensor], Tensor], x: Tensor) -> bool:
    """Whether the caller can differentiate the results of ``fn`` at ``x``.

    True when grad mode is on and ``x`` or a parameter of ``fn`` requires grad. A plain
    function (not an ``nn.Module``) may close over tensors that require grad, so with grad
    mode on it is assumed differentiable.
    """
    if not torch.is_grad_enabled():
        return False
    if x.requires_grad or not isinstance(fn, nn.Module):
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
        return torch.stack(rows)
    (rows,) = torch.autograd.grad(out, x, u, retain_graph=True, is_grads_batched=True)
    return rows


def batch_dot(u: Tensor, v: Tensor) -> Tensor:
    """Per-sample inner products over all dims after the first two: ``(P, B, ...) -> (P, B)``."""
    return (u * v).flatten(2).sum(-1)
