"""Builders of contractive residual branches from spectrally normalized layers."""

from __future__ import annotations

from torch import nn

from iresnet.flows import ActNorm, Flow, FlowSequential, ResidualBlock
from iresnet.lipschitz import get_activation, spectral_norm
from iresnet.ops import Conv2d


def _activation(name: str, channels: int) -> tuple[nn.Module, int]:
    """The activation module and the number of channels it outputs (CLipSwish doubles them)."""
    act = get_activation(name, channels)
    return act, channels * getattr(act, "channel_multiplier", 1)


def conv_branch(
    channels: int,
    hidden: int,
    spatial: tuple[int, int],
    kernels: str = "3-1-3",
    activation: str = "lipswish",
    coeff: float = 0.98,
    n_power_iterations: int = 1,
    preact: bool = True,
) -> nn.Sequential:
    """``g: (B, C, H, W) -> (B, C, H, W)``: normalized convs with kernel sizes ``kernels``.

    Every conv has operator norm <= ``coeff`` and every activation is 1-Lipschitz, so
    ``Lip(g) <= coeff ** n_convs < 1``.
    """
    sizes = [int(k) for k in kernels.split("-")]
    layers: list[nn.Module] = []
    width = channels
    if preact:
        act, width = _activation(activation, width)
        layers.append(act)
    for i, k in enumerate(sizes):
        out = channels if i == len(sizes) - 1 else hidden
        conv = Conv2d(width, out, k, padding=k // 2)
        layers.append(spectral_norm(conv, coeff, n_power_iterations, input_shape=(width, *spatial)))
        if i < len(sizes) - 1:
            act, width = _activation(activation, out)
            layers.append(act)
    return nn.Sequential(*layers)


def fc_branch(
    dim: int,
    hidden: int,
    n_hidden_layers: int = 2,
    activation: str = "lipswish",
    coeff: float = 0.98,
    n_power_iterations: int = 1,
    preact: bool = True,
) -> nn.Sequential:
    """``g: (B, D) -> (B, D)``: an MLP of normalized linear layers, ``Lip(g) <= coeff^(n+1)``."""
    layers: list[nn.Module] = []
    width = dim
    if preact:
        act, width = _activation(activation, width)
        layers.append(act)
    for i in range(n_hidden_layers + 1):
        out = dim if i == n_hidden_layers else hidden
        layers.append(spectral_norm(nn.Linear(width, out), coeff, n_power_iterations))
        if i < n_hidden_layers:
            act, width = _activation(activation, out)
            layers.append(act)
    return nn.Sequential(*layers)


def residual_stack(branches: list[nn.Module], features: int, logdet, inverse, actnorm: bool = True) -> FlowSequential:
    """Residual blocks on ``branches``, each followed by ``ActNorm(features)`` if ``actnorm``."""
    flows: list[Flow] = []
    for net in branches:
        flows.append(ResidualBlock(net, logdet=logdet, inverse=inverse))
        if actnorm:
            flows.append(ActNorm(features))
    return FlowSequential(*flows)
