r"""``nn.Conv2d`` with a second derivative built from the first-order convolution kernels.

The Neumann log-det gradient differentiates a vector-Jacobian product of the residual branch,
so every convolution is differentiated twice. PyTorch's generic double backward of a
convolution computes the weight term as a convolution of transposed activations with a kernel
as large as the feature map, which oneDNN runs slowly. For ``conv(x, W)`` with output gradient
``o`` the first backward gives

    gx = conv_transpose(o, W),      gW = <o, conv(x, .)>,      gb = sum(o),

and all three are bilinear, so their derivatives in directions ``(gg_x, gg_W, gg_b)`` are

    d o = conv(gg_x, W) + conv(x, gg_W) + gg_b,
    d x = conv_transpose(o, gg_W),
    d W = <o, conv(gg_x, .)>,

each one call of ``F.conv2d`` or ``aten.convolution_backward``.

On the CPU, oneDNN is also slow on convolutions with a single input or output channel (the
first and last conv of a branch on a grayscale image) wherever the result has one channel or is
the weight gradient. For 'same' stride-1 convolutions of CPU tensors with one channel on either
side, :func:`conv_forward` (one output channel), :func:`conv_input_grad` (one input channel) and
:func:`conv_weight_grad` therefore take another path: an unfold or fold on the one-channel side
(k*k channels) around one product against the wide side, a batched matrix product for the
weight gradient and a 1x1 convolution with k*k output channels for the other two. The unfold is
one copy of the padded map's k x k windows (:func:`_unfold`) and the fold one ``index_add`` of
the taps into the padded output (:func:`_fold`), rather than ATen's ``im2col``/``col2im``, which
loop over the batch one sample at a time. Other devices and cases use ``F.conv2d``.

The input's and the parameters' first derivatives are autograd nodes of their own
(:class:`_Convolution`), so the log-det estimators' products w.r.t. the input skip the weight
gradient by autograd's own pruning.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def _conv_backward(grad_out: Tensor, x: Tensor, weight: Tensor, conf: tuple, mask: list[bool]):
    stride, padding, dilation = conf
    return torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, stride, padding, dilation, False, [0, 0], 1, mask
    )


def _one_channel(weight: Tensor, conf: tuple) -> bool:
    """Whether the unfold + matrix product path applies: a 'same' stride-1 k x k convolution
    (k odd, k > 1) of CPU tensors with one input or one output channel."""
    stride, padding, dilation = conf
    c_out, c_in, kh, kw = weight.shape
    return (
        weight.device.type == "cpu"
        and min(c_out, c_in) == 1
        and kh * kw > 1
        and kh % 2 == 1
        and kw % 2 == 1
        and tuple(stride) == (1, 1)
        and tuple(dilation) == (1, 1)
        and tuple(padding) == (kh // 2, kw // 2)
    )


def _unfold(x: Tensor, kh: int, kw: int) -> Tensor:
    """``F.unfold(x, (kh, kw), padding=(kh // 2, kw // 2))`` for one channel: ``(B, 1, H, W) ->
    (B, kh*kw, H*W)``, tap ``(i, j)`` being the map shifted by ``(i - kh // 2, j - kw // 2)``."""
    b, _, h, w = x.shape
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
    windows = padded[:, 0].unfold(1, kh, 1).unfold(2, kw, 1)  # (B, H, W, kh, kw), a view
    return windows.permute(0, 3, 4, 1, 2).reshape(b, kh * kw, h * w)


@functools.lru_cache(maxsize=64)
def _fold_targets(kh: int, kw: int, h: int, w: int, device: torch.device) -> Tensor:
    """Where :func:`_fold` adds each tap, in taps' memory order ``(pixel, tap)``: tap ``(i, j)`` of
    pixel ``(a, b)`` belongs to output pixel ``(a + i - kh // 2, b + j - kw // 2)``, which is
    ``(a + i, b + j)`` of the output padded by ``(kh // 2, kw // 2)``, flattened.

    Built once per shape (a model has a few), outside any inference mode or graph, and only read."""
    with torch.inference_mode(False), torch.no_grad():
        i, j = torch.arange(kh, device=device).view(kh, 1, 1, 1), torch.arange(kw, device=device).view(1, kw, 1, 1)
        a, b = torch.arange(h, device=device).view(1, 1, h, 1), torch.arange(w, device=device).view(1, 1, 1, w)
        return ((a + i) * (w + kw - 1) + (b + j)).permute(2, 3, 0, 1).reshape(-1)


def _fold(taps: Tensor, kh: int, kw: int, h: int, w: int) -> Tensor:
    """``F.fold(taps, (h, w), (kh, kw), padding=(kh // 2, kw // 2))``, the adjoint of
    :func:`_unfold`: ``(B, kh*kw, H*W) -> (B, 1, H, W)``, the sum of the taps shifted back.

    One ``index_add`` into the padded output, then the crop. ``taps`` come from
    :func:`_pixelwise` with the tap index innermost, so their flattening is a view."""
    b, (ph, pw) = taps.shape[0], (kh // 2, kw // 2)
    flat = taps.transpose(1, 2).reshape(b, -1)
    padded = flat.new_zeros(b, (h + 2 * ph) * (w + 2 * pw)).index_add(1, _fold_targets(kh, kw, h, w, taps.device), flat)
    return padded.view(b, 1, h + 2 * ph, w + 2 * pw)[..., ph : ph + h, pw : pw + w].contiguous()


def _rows(t: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, H*W, C)``: a view for channels-last tensors."""
    b, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(b, h * w, c)


def _pixelwise(t: Tensor, matrix: Tensor) -> Tensor:
    """``(B, C, H, W) x (C, K) -> (B, K, H*W)``: ``t``'s channels times ``matrix`` at every pixel.

    A 1x1 convolution, which oneDNN runs faster than a matrix product of the rows with only K
    columns (a skinny GEMM)."""
    taps = F.conv2d(t, matrix.t().reshape(*matrix.shape[::-1], 1, 1))
    # reshape, not flatten: vmap (batched vector-Jacobian products) has no rule for flatten here.
    return taps.reshape(*taps.shape[:2], -1)


def conv_forward(x: Tensor, weight: Tensor, bias: Tensor | None, conf: tuple) -> Tensor:
    """``F.conv2d(x, weight, bias, *conf)``."""
    if weight.shape[0] != 1 or not _one_channel(weight, conf):
        return F.conv2d(x, weight, bias, *conf)
    # One output channel: per input pixel, its C_in channels times the (C_in, k*k) flipped taps;
    # fold sums the taps into the output pixels.
    (kh, kw), (h, w) = weight.shape[-2:], x.shape[-2:]
    taps = _pixelwise(x, weight.flip(-2, -1).reshape(-1, kh * kw))
    out = _fold(taps, kh, kw, h, w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def conv_input_grad(grad_out: Tensor, x: Tensor, weight: Tensor, conf: tuple) -> Tensor:
    """``d <grad_out, conv(x, weight)> / dx`` (a transposed convolution of ``grad_out``)."""
    if weight.shape[1] != 1 or not _one_channel(weight, conf):
        return _conv_backward(grad_out, x, weight, conf, [True, False, False])[0]
    # One input channel: per pixel, its C_out channels times the (C_out, k*k) taps; fold them.
    (kh, kw), (h, w) = weight.shape[-2:], x.shape[-2:]
    taps = _pixelwise(grad_out, weight.reshape(-1, kh * kw))
    return _fold(taps, kh, kw, h, w)


def conv_weight_grad(grad_out: Tensor, x: Tensor, weight: Tensor, conf: tuple) -> Tensor:
    """``d <grad_out, conv(x, weight)> / dweight``."""
    if not _one_channel(weight, conf):
        return _conv_backward(grad_out, x, weight, conf, [False, True, False])[1]
    c_out, c_in, kh, kw = weight.shape
    if c_in == 1:  # sum over pixels of unfold(x) (k*k) times grad_out (C_out)
        cols = _unfold(x, kh, kw)
        return torch.bmm(cols, _rows(grad_out)).sum(0).t().reshape(weight.shape)
    cols = _unfold(grad_out, kh, kw)
    flipped = torch.bmm(cols, _rows(x)).sum(0).view(c_out, kh, kw, c_in)
    return flipped.permute(0, 3, 1, 2).flip(-2, -1)


class _Convolution(torch.autograd.Function):
    """``conv(x, W, b)`` of ``operands``, whose output gradient goes on, unchanged, to the two
    taps: :class:`_InputGradient` and :class:`_ParameterGradients`.

    Each tap is an autograd node of its own with edges only to what it differentiates, so
    autograd runs it only when those gradients are wanted: the many products w.r.t. the input
    alone that the log-det estimators take skip the weight gradient, and a backward pass to the
    weights alone skips the input's. The tensors a tap does not differentiate come in a tuple,
    saved rather than inputs, so the gradients it gives stay differentiable w.r.t. them.
    """

    @staticmethod
    def forward(ctx: Any, input_tap: Tensor, parameter_tap: Tensor, operands: tuple, conf: tuple) -> Tensor:
        x, weight, bias = operands
        return conv_forward(x, weight, bias, conf)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        return grad_out, grad_out, None, None


def conv_output_size(size: Sequence[int], kernel: Sequence[int], conf: tuple) -> list[int]:
    """The spatial size of ``conv(x, W)`` for ``x``'s spatial ``size``, ``W``'s ``kernel`` and
    ``conf = (stride, padding, dilation)``."""
    stride, padding, dilation = conf
    return [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)]


def _tap_forward(ctx: Any, x: Tensor, weight: Tensor, conf: tuple) -> Tensor:
    """A tap's forward: saves ``(x, weight)`` and returns a zero of ``conv(x, weight)``'s shape
    ``(B, C_out, H_out, W_out)``, without memory."""
    ctx.save_for_backward(x, weight)
    ctx.conf = conf
    spatial = conv_output_size(x.shape[-2:], weight.shape[-2:], conf)
    return weight.new_zeros(()).expand(x.shape[0], weight.shape[0], *spatial)


class _InputGradient(torch.autograd.Function):
    """A tap of :class:`_Convolution`: its backward is the input's gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, saved: tuple[Tensor], conf: tuple) -> Tensor:
        return _tap_forward(ctx, x, *saved, conf)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        return _first_order(grad_out, x, weight, ctx.conf, [True, False, False])[0], None, None


class _ParameterGradients(torch.autograd.Function):
    """A tap of :class:`_Convolution`: its backward is the weight's and the bias's gradients."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, bias: Tensor | None, saved: tuple[Tensor], conf: tuple) -> Tensor:
        return _tap_forward(ctx, *saved, weight, conf)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        _, grad_w, grad_b = _first_order(grad_out, x, weight, ctx.conf, [False, *ctx.needs_input_grad[:2]])
        return grad_w, grad_b, None, None


def _first_order(grad_out: Tensor, x: Tensor, weight: Tensor, conf: tuple, mask: list[bool]):
    """:func:`_conv_grads`, with a node for the second derivative only when this backward pass
    builds a graph."""
    return (_Conv2dBackward.apply if torch.is_grad_enabled() else _conv_grads)(grad_out, x, weight, conf, mask)


def _conv_grads(grad_out: Tensor, x: Tensor, weight: Tensor, conf: tuple, mask: list[bool]):
    """Gradients w.r.t. ``(x, weight, bias)`` where ``mask`` asks for them, else None."""
    need_x, need_w, need_b = mask
    return (
        conv_input_grad(grad_out, x, weight, conf) if need_x else None,
        conv_weight_grad(grad_out, x, weight, conf) if need_w else None,
        grad_out.sum((0, 2, 3)) if need_b else None,
    )


class _Conv2dBackward(torch.autograd.Function):
    """:func:`_conv_grads`, differentiable once more."""

    @staticmethod
    def forward(ctx: Any, grad_out: Tensor, x: Tensor, weight: Tensor, conf: tuple, mask: list[bool]):
        ctx.save_for_backward(grad_out, x, weight)
        ctx.conf = conf
        return _conv_grads(grad_out, x, weight, conf, mask)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gg_x: Tensor | None, gg_w: Tensor | None, gg_b: Tensor | None):
        grad_out, x, weight = ctx.saved_tensors
        conf = ctx.conf
        need_o, need_x, need_w = ctx.needs_input_grad[:3]
        d_o = d_x = d_w = None
        if need_o:
            terms = []
            if gg_x is not None:
                terms.append(conv_forward(gg_x, weight, None, conf))
            if gg_w is not None:
                terms.append(conv_forward(x, gg_w, None, conf))
            if gg_b is not None:
                terms.append(gg_b.view(1, -1, 1, 1).expand_as(grad_out))
            d_o = sum(terms[1:], terms[0]) if terms else None
        if need_x and gg_w is not None:
            d_x = conv_input_grad(grad_out, x, gg_w, conf)
        if need_w and gg_x is not None:
            d_w = conv_weight_grad(grad_out, gg_x, weight, conf)
        return d_o, d_x, d_w, None, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (zero padding, ``groups=1``) whose double backward uses the first-order
    convolution kernels; see the module docstring. Same parameters, same results."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError(
                "iresnet.ops.Conv2d supports groups=1 and explicit zero padding only; "
                f"got groups={self.groups}, padding={self.padding!r}, padding_mode={self.padding_mode!r}. "
                "Use torch.nn.Conv2d for other cases."
            )

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        conf = (self.stride, self.padding, self.dilation)
        if not torch.is_grad_enabled():  # e.g. fixed-point inversion: nothing to differentiate
            return conv_forward(x, weight, bias, conf)
        if torch.compiler.is_compiling():
            # The traced log-det estimators take their products with torch.func, which does not see
            # the tensors the taps pass inside tuples (wrong products); the compiler derives torch's
            # own convolution, to any order, itself. ATen's convolution rather than F.conv2d (its
            # composite): an exported program's forward-mode products through conv2d lose their
            # tangents when ExportedProgram.run_decompositions retraces it (as the ONNX exporter does).
            return torch.ops.aten.convolution(x, weight, bias, self.stride, self.padding, self.dilation, False, (0, 0), 1)
        input_tap = _InputGradient.apply(x, (weight,), conf)
        parameter_tap = _ParameterGradients.apply(weight, bias, (x,), conf)
        return _Convolution.apply(input_tap, parameter_tap, (x, weight, bias), conf)
