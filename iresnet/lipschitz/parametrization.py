r"""Soft spectral normalization of a weight, as a ``torch.nn.utils.parametrize`` parametrization.

The weight ``W`` is read as a linear operator ``A(W)`` (a matrix, or a whole convolution acting
on images of a fixed size) and replaced by

    W_sn = W / max(1, sigma / coeff),      sigma = <u, A(W) v>  ~  ||A(W)||_2,

where ``u``, ``v`` are the leading left/right singular vectors estimated by power iteration
(Miyato et al. 2018). The rescale is soft: a weight already below ``coeff`` is left unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Iterations run once when the vectors are created, so the first estimate is already close.
_WARMUP_ITERATIONS = 15


def _normalize(x: Tensor, eps: float) -> Tensor:
    """``x / ||x||`` over all elements (``x`` is one vector of any shape)."""
    return x / x.norm().clamp_min(eps)


class SpectralNorm(nn.Module):
    r"""Base parametrization ``W -> W / max(1, sigma / coeff)`` for an operator ``A(W)``.

    Subclasses define the operator and its adjoint for ``L`` stacked weights at once through
    :meth:`operators` and :meth:`adjoints` (``u`` has the operator's output shape, ``v`` its input
    shape); :meth:`operator` and :meth:`adjoint` are their one-layer case.

    Buffers (saved in the ``state_dict``):
        ``_u``: estimate of the leading left singular vector, unit norm.
        ``_v``: estimate of the leading right singular vector, unit norm.
        ``_sigma``: () ``<u, A(W) v>`` for the raw weight at the last power-iteration step
        (NaN before the first); read it through :attr:`sigma`.

    In training mode each call runs ``n_power_iterations`` steps (no gradient) and then
    ``sigma = <u, A(W) v>`` with the gradient flowing through ``W`` only. In eval mode nothing is
    written, so ``torch.func`` transforms (e.g. ``jacrev`` of a residual branch) can trace it.
    """

    def __init__(self, weight: Tensor, coeff: float, n_power_iterations: int, eps: float = 1e-12) -> None:
        super().__init__()
        if not 0.0 < coeff < 1.0:
            raise ValueError(
                f"coeff must satisfy 0 < coeff < 1 so the residual branch is a contraction; "
                f"got coeff={coeff!r}. Use e.g. coeff=0.97."
            )
        n = n_power_iterations
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"n_power_iterations must be an integer >= 1; got n_power_iterations={n!r}. "
                "Use e.g. n_power_iterations=1."
            )
        self.coeff = float(coeff)
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        # Empty until the operator's shapes are known (see ``ConvSpectralNorm``).
        self.register_buffer("_u", weight.new_empty(0))
        self.register_buffer("_v", weight.new_empty(0))
        self.register_buffer("_sigma", weight.new_full((), math.nan))

    def operators(self, weights: Tensor, v: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``A(W_i) v_i`` for ``L`` layers of this one's :meth:`group_key` at once: stacked weights
        ``(L, *W.shape)``, vectors ``(L, *v.shape)``; returns ``(L, *u.shape)``."""
        raise NotImplementedError

    def adjoints(self, weights: Tensor, u: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``A(W_i)^T u_i``: ``(L, *W.shape)``, ``(L, *u.shape)`` -> ``(L, *v.shape)``."""
        raise NotImplementedError

    def group_key(self, weight: Tensor) -> tuple:
        """Layers with equal keys share one operator shape, so :meth:`operators` can apply any of
        them, together (:func:`~iresnet.lipschitz.update_spectral_norms` batches them so)."""
        shapes = (tuple(weight.shape), tuple(self._u.shape), tuple(self._v.shape))
        return (type(self), *shapes, weight.dtype, weight.device)

    def operator(self, weight: Tensor, v: Tensor) -> Tensor:
        """``A(W) v``."""
        return self.operators(weight.unsqueeze(0), v.unsqueeze(0)).squeeze(0)

    def adjoint(self, weight: Tensor, u: Tensor) -> Tensor:
        """``A(W)^T u``."""
        return self.adjoints(weight.unsqueeze(0), u.unsqueeze(0)).squeeze(0)

    @property
    def initialized(self) -> bool:
        """Whether ``u`` and ``v`` exist (a lazy convolution gets them on its first input)."""
        return self._v.numel() > 0

    @property
    def sigma(self) -> Tensor:
        """() latest power-iteration estimate of ``||A(W)||_2`` for the raw weight."""
        return self._sigma

    def check_initialized(self) -> None:
        """Raise a ``RuntimeError`` explaining how to initialize if ``u``, ``v`` do not exist yet."""
        if not self.initialized:
            raise RuntimeError(
                f"{type(self).__name__} does not know the input size of its layer yet: pass "
                "input_shape=(C, H, W) to spectral_norm(), run one forward pass, or load a state_dict."
            )

    def initialize(self, weight: Tensor, u_shape: tuple[int, ...], v_shape: tuple[int, ...]) -> None:
        """Create a random unit ``u: u_shape`` and ``v: v_shape``, warmed up by power iteration."""
        self._u = _normalize(weight.new_empty(u_shape).normal_(), self.eps)
        self._v = weight.new_empty(v_shape)  # the first step computes v from u
        self.power_iteration(weight, _WARMUP_ITERATIONS)

    @torch.no_grad()
    def power_iteration(self, weight: Tensor, n_iterations: int) -> None:
        """``v <- normalize(A^T u)``, ``u <- normalize(A v)``, ``n_iterations`` times, in place.

        Updating ``u`` last makes ``||A v||`` (before normalizing) equal ``<u, A v>``, so the
        stored ``sigma`` comes for free.
        """
        self.check_initialized()
        # In place, like torch's spectral norm, so that DataParallel replicas update the
        # buffers of the module on device[0].
        for _ in range(n_iterations):
            self._v.copy_(_normalize(self.adjoint(weight, self._u), self.eps))
            image = self.operator(weight, self._v)
            self._sigma.copy_(image.norm())
            self._u.copy_(image / self._sigma.clamp_min(self.eps))

    def estimate(self, weight: Tensor) -> Tensor:
        """``sigma = <u, A(W) v>``: () differentiable in ``W``, with ``u``, ``v`` held fixed."""
        self.check_initialized()
        # Clones: the graph must keep this call's u, v even if a later forward updates the
        # buffers in place before backward (e.g. loss = D(real) - D(fake)).
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        return (u * self.operator(weight, v)).sum()

    def forward(self, weight: Tensor) -> Tensor:
        if self.training:
            self.power_iteration(weight, self.n_power_iterations)
        sigma = self.estimate(weight)
        return weight / torch.clamp(sigma / self.coeff, min=1.0)

    def right_inverse(self, value: Tensor) -> Tensor:
        # Assigning to module.weight stores the raw value; it is rescaled on the next read.
        return value

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}, n_power_iterations={self.n_power_iterations}"


class MatrixSpectralNorm(SpectralNorm):
    r"""Spectral norm of ``W`` as a matrix: ``A(W) = W.reshape(out, -1)``.

    Exact operator for ``nn.Linear`` (``W: (out, in)``) and for 1x1 convolutions
    (``W: (C_out, C_in, 1, 1)``; stride and zero padding do not change their norm).
    ``u: (out,)``, ``v: (in,)``.
    """

    def __init__(self, weight: Tensor, coeff: float, n_power_iterations: int) -> None:
        super().__init__(weight, coeff, n_power_iterations)
        self.initialize(weight, (weight.shape[0],), (weight[0].numel(),))

    def operators(self, weights: Tensor, v: Tensor) -> Tensor:
        return torch.bmm(weights.flatten(2), v.unsqueeze(2)).squeeze(2)

    def adjoints(self, weights: Tensor, u: Tensor) -> Tensor:
        return torch.bmm(u.unsqueeze(1), weights.flatten(2)).squeeze(1)


class ConvSpectralNorm(SpectralNorm):
    r"""Spectral norm of a zero-padded ``conv2d`` as an operator on ``(C_in, H, W)`` images.

    ``A(W) v = conv2d(v, W, stride, padding, dilation)`` and
    ``A(W)^T u = conv_transpose2d(u, W, stride, padding, output_padding, dilation)`` with the
    ``output_padding`` that gives back ``v``'s shape. ``W: (C_out, C_in, kh, kw)``,
    ``v: (1, C_in, H, W)``, ``u: (1, C_out, H_out, W_out)``.

    The norm depends on ``(H, W)``; it is also a bound for smaller inputs (zero-embedding a
    smaller image into the top-left corner reproduces its output exactly), not for larger ones.
    Without ``input_hw`` the vectors are created on the first input (see ``initialize_for_input``).
    """

    def __init__(
        self,
        weight: Tensor,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        coeff: float,
        n_power_iterations: int,
        input_hw: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(weight, coeff, n_power_iterations)
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        if input_hw is not None:
            self.initialize_for_input(weight, input_hw)

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """The spatial size ``(H, W)`` the norm is computed for, or None before initialization."""
        return tuple(self._v.shape[-2:]) if self.initialized else None

    def initialize_for_input(self, weight: Tensor, input_hw: tuple[int, int]) -> None:
        """Create ``u``, ``v`` for inputs of spatial size ``input_hw = (H, W)``."""
        v_shape = (1, weight.shape[1], *input_hw)
        with torch.no_grad():
            u_shape = tuple(self.operator(weight, weight.new_zeros(v_shape)).shape)
        self.initialize(weight, u_shape, v_shape)

    def group_key(self, weight: Tensor) -> tuple:
        return (*super().group_key(weight), self.stride, self.padding, self.dilation)

    # L layers are one grouped convolution (groups=L) of their vectors stacked along channels.
    def operators(self, weights: Tensor, v: Tensor) -> Tensor:
        image = F.conv2d(
            v.flatten(0, 2).unsqueeze(0), weights.flatten(0, 1), None, self.stride, self.padding, self.dilation,
            len(weights),
        )
        return image.view(len(weights), 1, -1, *image.shape[-2:])

    def adjoints(self, weights: Tensor, u: Tensor) -> Tensor:
        # The gradient of the convolution w.r.t. its input: conv_transpose2d with the output
        # padding that gives back v's shape. ATen runs an ungrouped conv_transpose2d (one layer)
        # with its slow reference kernel; this call reaches oneDNN's.
        input_shape = (1, weights.shape[0] * weights.shape[2], *self._v.shape[-2:])
        (image, _, _) = torch.ops.aten.convolution_backward(
            u.flatten(0, 2).unsqueeze(0), u.new_empty(input_shape), weights.flatten(0, 1), None, self.stride,
            self.padding, self.dilation, False, [0, 0], len(weights), [True, False, False],
        )  # fmt: skip
        return image.view(len(weights), 1, -1, *image.shape[-2:])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A fresh lazy layer has empty vectors: take the checkpoint's shapes (and so its input size).
        if not self.initialized:
            for name in ("_u", "_v"):
                saved = state_dict.get(prefix + name)
                if saved is not None:
                    setattr(self, name, self._sigma.new_empty(saved.shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
