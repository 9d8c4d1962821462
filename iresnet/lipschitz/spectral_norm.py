"""Registering soft spectral normalization on ``nn.Linear`` / ``nn.Conv2d`` and finding it again."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch import Tensor, nn
from torch.nn.utils import parametrize

from iresnet.lipschitz.parametrization import ConvSpectralNorm, MatrixSpectralNorm, SpectralNorm


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """``conv.padding`` as ints; the string forms must amount to symmetric zero padding."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding != "same":
        return conv.padding
    left_w, right_w, top_h, bottom_h = conv._reversed_padding_repeated_twice
    if left_w != right_w or top_h != bottom_h:
        raise ValueError(
            f"spectral_norm needs symmetric padding; padding='same' with kernel_size={conv.kernel_size} "
            f"and dilation={conv.dilation} pads asymmetrically. Use an odd kernel size or explicit padding."
        )
    return (top_h, left_w)


def _make_parametrization(
    module: nn.Module, coeff: float, n_power_iterations: int, input_shape: Sequence[int] | None
) -> SpectralNorm:
    weight = module.weight
    if isinstance(module, nn.Linear):
        return MatrixSpectralNorm(weight, coeff, n_power_iterations)
    if not isinstance(module, nn.Conv2d):
        raise TypeError(
            f"spectral_norm supports nn.Linear and nn.Conv2d; got {type(module).__name__}."
        )
    if module.groups != 1:
        raise ValueError(f"spectral_norm supports nn.Conv2d with groups=1 only; got groups={module.groups}.")
    padding = _conv_padding(module)
    if module.padding_mode != "zeros" and any(padding):
        raise ValueError(
            f"spectral_norm supports zero padding only; got padding_mode={module.padding_mode!r}. "
            "Use padding_mode='zeros' (for circular convolutions see conv_singular_values_fft)."
        )
    if module.kernel_size == (1, 1):
        return MatrixSpectralNorm(weight, coeff, n_power_iterations)
    input_hw = None
    if input_shape is not None:
        if len(input_shape) not in (2, 3):
            raise ValueError(f"input_shape must be (C, H, W) or (H, W); got {tuple(input_shape)}.")
        if len(input_shape) == 3 and input_shape[0] != module.in_channels:
            raise ValueError(
                f"input_shape={tuple(input_shape)} has {input_shape[0]} channels but the conv expects "
                f"{module.in_channels}."
            )
        input_hw = tuple(input_shape[-2:])
    return ConvSpectralNorm(
        weight, module.stride, padding, module.dilation, coeff, n_power_iterations, input_hw
    )


def _prepare_conv_input(module: nn.Module, args: tuple[Tensor, ...]) -> None:
    """Forward pre-hook: create a lazy conv's vectors from its first input, then guard its size."""
    sn: ConvSpectralNorm = module.parametrizations.weight[0]
    input_hw = tuple(args[0].shape[-2:])
    if not sn.initialized:
        sn.initialize_for_input(module.parametrizations.weight.original, input_hw)
    elif input_hw[0] > sn.input_hw[0] or input_hw[1] > sn.input_hw[1]:
        raise ValueError(
            f"spectral_norm bounds this conv for inputs up to {sn.input_hw}; got spatial size {input_hw}. "
            "Pass input_shape with the largest input size to spectral_norm()."
        )


def spectral_norm(
    module: nn.Module,
    coeff: float = 0.97,
    n_power_iterations: int = 1,
    input_shape: Sequence[int] | None = None,
) -> nn.Module:
    r"""Constrain ``module.weight`` so the layer's operator norm stays ``<= coeff``.

    ``module.weight`` becomes ``W / max(1, sigma / coeff)`` with ``sigma`` the power-iteration
    estimate of the layer's spectral norm as a linear map (bias excluded):

    * ``nn.Linear`` and 1x1 ``nn.Conv2d``: the weight matrix ``(out, in)``.
    * k x k ``nn.Conv2d`` (any stride, zero padding, dilation; ``groups=1``): the convolution
      operator on inputs ``(C_in, H, W)``, not the reshaped kernel, whose norm is no bound.
      ``(H, W)`` comes from ``input_shape`` (``(C, H, W)`` or ``(H, W)``) or else from the first
      forward pass; before either, reading ``module.weight`` raises.

    Args:
        module: the ``nn.Linear`` or ``nn.Conv2d`` to constrain, modified in place.
        coeff: target bound, ``0 < coeff < 1``.
        n_power_iterations: power-iteration steps per forward in training mode, ``>= 1``.
        input_shape: input size for a k x k conv; ignored for the matrix cases.

    Returns:
        ``module``, with the parametrization registered on ``weight``.
    """
    if parametrize.is_parametrized(module, "weight"):
        raise ValueError(
            f"{type(module).__name__}.weight is already parametrized; register spectral_norm once."
        )
    sn = _make_parametrization(module, coeff, n_power_iterations, input_shape)
    # A lazy conv cannot evaluate the parametrization yet, so skip the registration-time check.
    parametrize.register_parametrization(module, "weight", sn, unsafe=not sn.initialized)
    if isinstance(sn, ConvSpectralNorm):
        module.register_forward_pre_hook(_prepare_conv_input)
    return module


def spectral_norm_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module, SpectralNorm]]:
    """Yield ``(name, module, parametrization)`` for every layer of ``model`` under :func:`spectral_norm`.

    The parametrization's input, the raw weight, is ``module.parametrizations.weight.original``.
    """
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            first = module.parametrizations.weight[0]
            if isinstance(first, SpectralNorm):
                yield name, module, first
