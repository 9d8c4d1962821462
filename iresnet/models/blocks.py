"""Builders of contractive residual branches from spectrally normalized layers.

Every builder returns a branch ``g`` with ``Lip(g) < 1`` in its input: a chain of normalized
layers and 1-Lipschitz activations (``Lip(g) <= coeff^n``), or i-DenseNet dense layers
(:class:`~iresnet.lipschitz.LipschitzDenseLayer`). Given ``context``, a factory of context
networks, the branch is conditional: a :class:`~iresnet.lipschitz.ContextShift` after every
hidden normalized layer adds a function of the context, which leaves the bound in ``x``
unchanged (:mod:`iresnet.lipschitz.conditional`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from iresnet.flows import ActNorm, Flow, FlowSequential, ResidualBlock
from iresnet.lipschitz import (
    ConditionalSequential, ContextShift, LipschitzDenseLayer, get_activation, spectral_norm,
)  # fmt: skip
from iresnet.ops import Conv2d

# A 1-Lipschitz activation: a name of get_activation, or a callable returning the module (called
# with num_channels=C when it takes that argument, e.g. LipSwish; else with nothing, e.g. nn.ELU).
Activation = str | Callable[..., nn.Module]
# A factory of context networks: width -> a module mapping the context to (B, width).
ContextNet = Callable[[int], nn.Module]


def make_activation(activation: Activation, channels: int) -> tuple[nn.Module, int]:
    """The activation module for ``channels`` inputs and the number of channels it outputs
    (CLipSwish doubles them)."""
    if isinstance(activation, str):
        act = get_activation(activation, channels)
    elif "num_channels" in inspect.signature(activation).parameters:
        act = activation(num_channels=channels)
    else:
        act = activation()
    return act, channels * getattr(act, "channel_multiplier", 1)


def label_embedding(num_classes: int) -> ContextNet:
    """Context networks for class labels ``(B,)``: ``nn.Embedding(num_classes, width)``, starting
    at zero (the branch starts as the unconditional one)."""

    def make(width: int) -> nn.Module:
        embedding = nn.Embedding(num_classes, width)
        nn.init.zeros_(embedding.weight)
        return embedding

    return make


def feature_mlp(context_features: int, hidden: int = 64) -> ContextNet:
    """Context networks for features ``(B, context_features)``: a two-layer MLP whose last layer
    starts at zero."""

    def make(width: int) -> nn.Module:
        net = nn.Sequential(nn.Linear(context_features, hidden), nn.SiLU(), nn.Linear(hidden, width))
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
        return net

    return make


def _branch(layers: list[nn.Module], context: ContextNet | None) -> nn.Sequential:
    return nn.Sequential(*layers) if context is None else ConditionalSequential(*layers)


def _chain(
    linear: Callable[[int, int, int], nn.Module],
    widths: list[int],
    activation: Activation,
    preact: bool,
    context: ContextNet | None,
) -> nn.Sequential:
    """``[act] -> linear(w_0, w_1) -> [shift] -> act -> ... -> linear(., w_n)``, where
    ``linear(in, out, i)`` builds the i-th normalized layer."""
    layers: list[nn.Module] = []
    width = widths[0]
    if preact:
        act, width = make_activation(activation, width)
        layers.append(act)
    n = len(widths) - 1
    for i in range(n):
        layers.append(linear(width, widths[i + 1], i))
        width = widths[i + 1]
        if i < n - 1:
            if context is not None:
                layers.append(ContextShift(context(width)))
            act, width = make_activation(activation, width)
            layers.append(act)
    return _branch(layers, context)


def conv_branch(
    channels: int,
    hidden: int,
    spatial: tuple[int, int],
    kernels: str = "3-1-3",
    activation: Activation = "lipswish",
    coeff: float = 0.98,
    n_power_iterations: int = 1,
    preact: bool = True,
    context: ContextNet | None = None,
) -> nn.Sequential:
    """``g: (B, C, H, W) -> (B, C, H, W)``: normalized convs with kernel sizes ``kernels``.

    Every conv has operator norm <= ``coeff`` and every activation is 1-Lipschitz, so
    ``Lip(g) <= coeff ** n_convs < 1`` (for every context, with ``context``).
    """
    sizes = [int(k) for k in kernels.split("-")]

    def conv(width: int, out: int, i: int) -> nn.Module:
        k = sizes[i]
        layer = Conv2d(width, out, k, padding=k // 2)
        return spectral_norm(layer, coeff, n_power_iterations, input_shape=(width, *spatial))

    return _chain(conv, [channels, *[hidden] * (len(sizes) - 1), channels], activation, preact, context)


def fc_branch(
    dim: int,
    hidden: int,
    n_hidden_layers: int = 2,
    activation: Activation = "lipswish",
    coeff: float = 0.98,
    n_power_iterations: int = 1,
    preact: bool = True,
    context: ContextNet | None = None,
) -> nn.Sequential:
    """``g: (B, D) -> (B, D)``: an MLP of normalized linear layers, ``Lip(g) <= coeff^(n+1)``."""

    def linear(width: int, out: int, i: int) -> nn.Module:
        return spectral_norm(nn.Linear(width, out), coeff, n_power_iterations)

    return _chain(linear, [dim, *[hidden] * n_hidden_layers, dim], activation, preact, context)


def _dense(
    linear: Callable[[int, int, bool], nn.Module],
    channels: int,
    growth: int,
    depth: int,
    activation: Activation,
    coeff: float,
    learnable_concat: bool,
    context: ContextNet | None,
) -> nn.Sequential:
    """i-DenseNet branch: ``depth`` dense layers of ``growth`` new channels, then ``linear``
    back to ``channels``; ``linear(in, out, last)`` builds a normalized layer."""
    layers: list[nn.Module] = []
    width = channels
    for _ in range(depth):
        _, multiplier = make_activation(activation, 1)
        new = growth // multiplier  # CLipSwish doubles its input channels
        parts: list[nn.Module] = [linear(width, new, False)]
        if context is not None:
            parts.append(ContextShift(context(new)))
        act, out = make_activation(activation, new)
        parts.append(act)
        layers.append(LipschitzDenseLayer(_branch(parts, context), coeff, learnable_concat))
        width += out
    layers.append(linear(width, channels, True))
    return _branch(layers, context)


def dense_conv_branch(
    channels: int,
    growth: int,
    depth: int,
    spatial: tuple[int, int],
    activation: Activation = "clipswish",
    coeff: float = 0.98,
    n_power_iterations: int = 1,
    learnable_concat: bool = True,
    context: ContextNet | None = None,
) -> nn.Sequential:
    """i-DenseNet conv branch ``(B, C, H, W) -> (B, C, H, W)`` (Perugachi-Diaz et al. 2021):
    ``depth`` dense layers, each a normalized 3x3 conv to ``growth`` channels and the activation
    (CLipSwish: ``growth / 2`` convolution channels, doubled), concatenated with learnable weights,
    then a normalized 1x1 conv back to ``C``. ``Lip(g) <= coeff^(depth + 1)``."""

    def conv(width: int, out: int, last: bool) -> nn.Module:
        k = 1 if last else 3
        layer = Conv2d(width, out, k, padding=k // 2)
        return spectral_norm(layer, coeff, n_power_iterations, input_shape=(width, *spatial))

    return _dense(conv, channels, growth, depth, activation, coeff, learnable_concat, context)


def dense_fc_branch(
    dim: int,
    growth: int,
    depth: int,
    activation: Activation = "clipswish",
    coeff: float = 0.98,
    n_power_iterations: int = 1,
    learnable_concat: bool = True,
    context: ContextNet | None = None,
) -> nn.Sequential:
    """i-DenseNet fully connected branch ``(B, D) -> (B, D)``, as :func:`dense_conv_branch` with
    normalized linear layers."""

    def linear(width: int, out: int, last: bool) -> nn.Module:
        return spectral_norm(nn.Linear(width, out), coeff, n_power_iterations)

    return _dense(linear, dim, growth, depth, activation, coeff, learnable_concat, context)


def residual_stack(branches: list[nn.Module], features: int, logdet, inverse, actnorm: bool = True) -> FlowSequential:
    """Residual blocks on ``branches``, each followed by ``ActNorm(features)`` if ``actnorm``."""
    flows: list[Flow] = []
    for net in branches:
        flows.append(ResidualBlock(net, logdet=logdet, inverse=inverse))
        if actnorm:
            flows.append(ActNorm(features))
    return FlowSequential(*flows)
