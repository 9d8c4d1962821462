"""Shared machinery of the power-series estimators: probes, gradient mode, graph handling.

Subclasses only choose the term weights ``c_1..c_n`` (see :mod:`iresnet.logdet.series`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from iresnet.logdet._autograd import call_net, graph_scope, requires_graph, tracked_input
from iresnet.logdet._validate import check_choice, check_int_at_least
from iresnet.logdet.memory_efficient import memory_efficient_logdet
from iresnet.logdet.probes import PROBE_KINDS, sample_probe
from iresnet.logdet.series import (
    GRAD_MODES, chunked_series_terms, series_logdet, traced_series_logdet, with_gradient_of,
)  # fmt: skip


class SeriesLogDet(ABC):
    """Estimator ``est(net, x, training, context=None) -> (g(x), logdet)`` of ``log det(I + dg/dx)``.

    ``x: (B, ...)``; ``logdet: (B,)``. With a context (one row per sample) the branch is
    ``g(x) = net(x, context)`` and the Jacobian is in ``x`` at fixed context. The results are differentiable (w.r.t. ``x`` and the
    parameters of ``net``) when grad mode is on and something requires grad, with the
    gradient given by ``grad`` (``"backprop"`` or ``"neumann"``). If ``memory_efficient``,
    no graph is kept between forward and backward: ``g`` is recomputed in the backward pass
    (:mod:`iresnet.logdet.memory_efficient`). Otherwise (e.g. under ``torch.no_grad()``) the
    graph is built internally for the VJPs, freed, and the results are detached. ``net`` must
    treat samples independently: the graph-free and memory-efficient paths evaluate it on
    chunks of at most ``chunk_size`` samples and at most ``chunk_pixels`` samples times spatial
    positions (``None``: no bound; see :meth:`samples_per_chunk`), which bounds their peak
    memory without changing the results.

    After each call, ``last_n_terms`` (int) and ``last_logdet`` (detached ``(B,)``) hold the
    draw's statistics, e.g. to log the estimator's moments.

    While ``torch.compile`` or ``torch.export`` traces, the products come from ``torch.func``
    (:func:`~iresnet.logdet.series.traced_series_logdet`), so the estimate is part of the
    captured graph; the memory-efficient path, whose backward rebuilds graphs itself, runs
    eagerly inside a compiled caller.
    """

    def __init__(
        self,
        n_probes: int,
        probe: str,
        grad: str,
        memory_efficient: bool,
        chunk_size: int | None,
        chunk_pixels: int | None,
    ) -> None:
        check_int_at_least("n_probes", n_probes, 1)
        for name, bound in (("chunk_size", chunk_size), ("chunk_pixels", chunk_pixels)):
            if bound is not None:
                check_int_at_least(name, bound, 1)
        check_choice("probe", probe, PROBE_KINDS)
        check_choice("grad mode", grad, GRAD_MODES)
        self.n_probes = n_probes
        self.probe = probe
        self.grad = grad
        self.memory_efficient = memory_efficient
        self.chunk_size = chunk_size
        self.chunk_pixels = chunk_pixels
        self.last_n_terms: int | None = None
        self.last_logdet: Tensor | None = None

    @abstractmethod
    def coefficients(self, training: bool) -> list[float]:
        """Draw the term weights ``[c_1, ..., c_n]`` for one call."""

    def samples_per_chunk(self, x: Tensor) -> int | None:
        """Samples per evaluation of the branch on the batch ``x: (B, C, *spatial)``: at most
        ``chunk_size``, and at most ``chunk_pixels // prod(spatial)`` (one at least; a flat
        ``(B, D)`` batch has one position per sample). ``None``: the whole batch.

        A branch's hidden feature maps grow with the spatial size of its input, so a pixel
        budget gives a multi-scale model small chunks where its maps are large and whole
        batches where they are small: the peak is set by the largest maps, and the small ones
        then cost no per-chunk overhead.
        """
        bounds = [] if self.chunk_size is None else [self.chunk_size]
        if self.chunk_pixels is not None:
            bounds.append(max(1, self.chunk_pixels // math.prod(x.shape[2:])))
        return min(bounds, default=None)

    def __call__(
        self, net: nn.Module, x: Tensor, training: bool, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        keep_graph = requires_graph(net, x, context)
        if keep_graph and self.memory_efficient:
            return self._memory_efficient_call(net, x, training, context)
        coeffs = self.coefficients(training)
        probes = sample_probe(x, self.probe, self.n_probes)
        chunk = self.samples_per_chunk(x)
        if torch.compiler.is_compiling():
            g_x, logdet = traced_series_logdet(net, x, probes, coeffs, self.grad, context)
        elif not keep_graph:
            g_x, logdet, _ = chunked_series_terms(net, x, probes, coeffs, chunk, neumann=False, context=context)
        else:
            with graph_scope():
                x_in = tracked_input(x, keep_graph=True)
                g_x = call_net(net, x_in, context)
                value, objective = series_logdet(g_x, x_in, probes, coeffs, self.grad)
            logdet = with_gradient_of(value, objective)
        self._record(coeffs, logdet)
        return g_x, logdet

    # The memory-efficient autograd Function takes VJPs in its forward and rebuilds the graph in its
    # backward (torch.autograd.grad), which no captured graph holds: a compiled caller breaks here,
    # once, with the draw of the terms inside, so no graph depends on the number drawn.
    @torch.compiler.disable
    def _memory_efficient_call(
        self, net: nn.Module, x: Tensor, training: bool, context: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        coeffs = self.coefficients(training)
        probes = sample_probe(x, self.probe, self.n_probes)
        g_x, logdet = memory_efficient_logdet(net, x, probes, coeffs, self.grad, self.samples_per_chunk(x), context)
        self._record(coeffs, logdet)
        return g_x, logdet

    def _record(self, coeffs: list[float], logdet: Tensor) -> None:
        self.last_n_terms = len(coeffs)
        self.last_logdet = logdet.detach()

    def _settings(self) -> dict[str, object]:
        return {
            "n_probes": self.n_probes,
            "probe": self.probe,
            "grad": self.grad,
            "memory_efficient": self.memory_efficient,
            "chunk_size": self.chunk_size,
            "chunk_pixels": self.chunk_pixels,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({args})"
