"""The multi-scale image flow of i-ResNet / Residual Flows / i-DenseNets, as a preset of FlowModel."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iresnet.flows import (
    ActNorm, Center, ChannelsLast, FactorOut, Flatten, Flow, FlowSequential, LogitTransform, Squeeze,
)  # fmt: skip
from iresnet.models.base import FlowModel
from iresnet.models import blocks
from iresnet.models.blocks import Activation, residual_stack
from iresnet.models.dequantization import VariationalDequantizer
from iresnet.models.priors import ClassConditionalGaussian, StandardNormal, check_labels

TASKS = ("density", "hybrid", "classification")
DEQUANTIZATIONS = ("uniform", "variational")


class HybridTerms(NamedTuple):
    """Per-sample terms of a hybrid model: ``objective``, ``cross_entropy`` (nats), ``log_prob``
    (``log p(x)``), ``logdet`` (all ``(B,)``) and ``logits`` ``(B, num_classes)``."""

    objective: Tensor
    cross_entropy: Tensor
    log_prob: Tensor
    logdet: Tensor
    logits: Tensor
BRANCHES = ("resnet", "densenet")
# A prior factory: the code dimension D -> a prior (see FlowModel).
PriorFactory = Callable[[int], nn.Module]


class ScaleClassifier(nn.Module):
    """``p(y | x)`` from the feature maps at the end of each scale (Residual Flows' hybrid head).

    Per scale: a 3x3 conv to ``hidden`` channels and a strided 3x3 conv, each with GroupNorm and
    ReLU, then average pooling to 2x2 (a global average loses where the strokes are); one linear
    layer on the concatenation. ``features``: ``[(B, C_s, H_s, W_s)]`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, channels: Sequence[int], num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        groups = math.gcd(8, hidden)
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, hidden, 3, padding=1), nn.GroupNorm(groups, hidden), nn.ReLU(),
                nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.GroupNorm(groups, hidden), nn.ReLU(),
                nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            )
            for c in channels
        )  # fmt: skip
        self.logits = nn.Linear(4 * hidden * len(self.heads), num_classes)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.logits(torch.cat([head(f) for head, f in zip(self.heads, features)], dim=1))


class ResidualFlow(FlowModel):
    """Multi-scale residual flow on images ``x: (B, C, H, W)`` in [0, 1]: a preset of :class:`FlowModel`.

    The flow, in order: ``LogitTransform(alpha)``, an optional initial ``Squeeze``, an ``ActNorm``, then
    ``len(n_blocks)`` scales of residual blocks (each followed by ``ActNorm``) with a ``Squeeze``
    between scales, optionally factoring out half the channels after each squeeze
    (``FactorOut``), then ``Flatten`` and ``fc_blocks`` fully connected residual blocks.
    ``z: (B, C * H * W)`` concatenates the factored-out parts and the final output.

    Args:
        input_shape: ``(C, H, W)`` of the images.
        n_blocks: residual blocks per scale, e.g. ``[4, 4, 4]`` for three scales.
        hidden_channels, kernels: width and kernel sizes of the convolutional ``resnet`` branches.
        activation: a 1-Lipschitz activation: a name (``lipswish``, ``clipswish``, ``elu``, ...) or
            a callable returning the module (Hydra: ``{_target_: iresnet.LipSwish, _partial_: true}``).
        coeff, n_power_iterations: spectral normalization of every layer.
        logdet, inverse: estimator and solver objects shared by every block.
        init_squeeze, factor_out, fc_blocks, fc_hidden, fc_hidden_layers, actnorm: the layout.
        preact: start every branch with the activation.
        first_preact: whether the model's first branch starts with it too. Off, as in Residual
            Flows: the first branch then sees the logit-transformed image directly, where LipSwish
            would flatten the background pixels, whose logits sit near log(alpha) (5-epoch
            protocol test bpd 1.960 -> 1.918).
        prior: a factory ``D -> prior`` (Hydra: ``{_target_: iresnet.models.DiagonalGaussian,
            _partial_: true}``); None: standard normal, or per-class Gaussians with ``num_classes``
            and ``task="density"``.
        alpha: the logit transform's margin.
        logit: start with the logit transform (else ``Center``, ``x - 0.5``, as i-ResNet does).
        init_actnorm: an ``ActNorm`` before the first block (after the logit transform and the
            initial squeeze), as Residual Flows has.
        channels_last: keep conv weights and feature maps in NHWC layout, which oneDNN's CPU
            convolutions run faster than NCHW.
        branch: ``resnet`` (chains of convs) or ``densenet`` (i-DenseNet: ``dense_depth`` dense
            layers of ``dense_growth`` channels, learnable concatenation if ``learnable_concat``).
        fc_branch: the same for the fully connected blocks (None: as ``branch``); dense ones grow
            by ``fc_hidden`` and end in a ``(D + depth fc_hidden) x D`` matrix, which makes them
            far larger than MLP ones for large ``D``.
        dequantization: ``uniform`` (the data's noise is used as it comes) or ``variational``
            (Ho et al. 2019: a :class:`~iresnet.models.dequantization.VariationalDequantizer` of
            ``dequantizer_blocks`` blocks, ``dequantizer_hidden`` wide, draws the noise for
            ``n_bits`` data, and ``log_prob`` is the variational bound).
        num_classes: with ``task="density"``, a class-conditional flow ``p(x | y)``: label
            embeddings shift every block's hidden layers and the prior is per-class (the context
            is the labels, int64 ``(B,)``). With ``task="hybrid"``, ``p(x)`` and a classifier
            ``p(y | x)`` on the features at the end of each scale (Residual Flows' hybrid model);
            with ``task="classification"``, the classifier alone.
        hybrid_lambda: the hybrid objective is ``lambda log p(x) + log p(y | x)`` (Nalisnick et
            al. 2019, as Residual Flows trains it); None: ``1 / D``, which weighs the density per
            dimension.
        classifier_hidden: channels of each scale's classifier head.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        n_blocks: Sequence[int] = (4, 4, 4),
        hidden_channels: int = 64,
        kernels: str = "3-1-3",
        activation: Activation = "lipswish",
        coeff: float = 0.98,
        n_power_iterations: int = 1,
        logdet=None,
        inverse=None,
        init_squeeze: bool = False,
        factor_out: bool = False,
        fc_blocks: int = 4,
        fc_hidden: int = 64,
        fc_hidden_layers: int = 2,
        actnorm: bool = True,
        preact: bool = True,
        first_preact: bool = False,
        prior: PriorFactory | None = None,
        alpha: float = 1e-6,
        logit: bool = True,
        init_actnorm: bool = True,
        channels_last: bool = True,
        branch: str = "resnet",
        dense_depth: int = 3,
        dense_growth: int = 64,
        learnable_concat: bool = True,
        fc_branch: str | None = None,
        dequantization: str = "uniform",
        n_bits: int = 8,
        dequantizer_hidden: int = 32,
        dequantizer_blocks: int = 2,
        num_classes: int | None = None,
        task: str = "density",
        hybrid_lambda: float | None = None,
        classifier_hidden: int = 64,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
        if dequantization not in DEQUANTIZATIONS:
            raise ValueError(f"dequantization must be one of {DEQUANTIZATIONS}, got {dequantization!r}.")
        fc_branch = branch if fc_branch is None else fc_branch
        for name, value in (("branch", branch), ("fc_branch", fc_branch)):
            if value not in BRANCHES:
                raise ValueError(f"{name} must be one of {BRANCHES}, got {value!r}.")
        if task != "density" and not num_classes:
            raise ValueError(f"task={task!r} needs num_classes (the classifier's number of classes).")
        c, h, w = (int(s) for s in input_shape)
        dim = c * h * w
        conditional = bool(num_classes) and task == "density"
        context = blocks.label_embedding(num_classes) if conditional else None

        def conv_branches(n: int, scale: int, c: int, h: int, w: int) -> list[nn.Module]:
            if branch == "densenet":
                return [blocks.dense_conv_branch(c, dense_growth, dense_depth, (h, w), activation, coeff, n_power_iterations,
                                          learnable_concat, context) for _ in range(n)]  # fmt: skip
            return [
                blocks.conv_branch(c, hidden_channels, (h, w), kernels, activation, coeff, n_power_iterations,
                            preact and (first_preact or (scale, j) != (0, 0)), context)
                for j in range(n)
            ]  # fmt: skip

        def fc_branches(d: int) -> list[nn.Module]:
            if fc_branch == "densenet":
                return [blocks.dense_fc_branch(d, fc_hidden, dense_depth, activation, coeff, n_power_iterations,
                                        learnable_concat, context) for _ in range(fc_blocks)]  # fmt: skip
            return [blocks.fc_branch(d, fc_hidden, fc_hidden_layers, activation, coeff, n_power_iterations, preact, context)
                    for _ in range(fc_blocks)]  # fmt: skip

        scales: list[FlowSequential] = []
        scale_channels: list[int] = []
        factored_dims: list[int] = []
        final_shape: list[tuple[int, int, int]] = []

        def from_scale(i: int, c: int, h: int, w: int) -> list[Flow]:
            """The flows of scales ``i, i+1, ...``, ending in flat codes."""
            stack = residual_stack(conv_branches(n_blocks[i], i, c, h, w), c, logdet, inverse, actnorm)
            scales.append(stack)
            scale_channels.append(c)
            flows: list[Flow] = [ChannelsLast(), stack] if channels_last else [stack]
            if i == len(n_blocks) - 1:
                final_shape.append((c, h, w))
                fc = [residual_stack(fc_branches(c * h * w), c * h * w, logdet, inverse, actnorm)] if fc_blocks else []
                return [*flows, Flatten((c, h, w)), *fc]
            c, h, w = _squeezed(c, h, w)
            flows.append(Squeeze(2))
            if not factor_out:
                return flows + from_scale(i + 1, c, h, w)
            factored_dims.append(c // 2 * h * w)
            rest = FlowSequential(*from_scale(i + 1, c - c // 2, h, w))
            return [*flows, FactorOut(rest, (c // 2, h, w))]

        layers: list[Flow] = [LogitTransform(alpha) if logit else Center()]
        if init_squeeze:
            layers.append(Squeeze(2))
            c, h, w = _squeezed(c, h, w)
        if init_actnorm and actnorm:
            layers.append(ActNorm(c))
        layers += from_scale(0, c, h, w)
        if prior is None:
            prior = (lambda d: ClassConditionalGaussian(d, num_classes)) if conditional else StandardNormal
        dequantizer = (
            VariationalDequantizer(input_shape, 2**n_bits, dequantizer_hidden, dequantizer_blocks, logdet=logdet)
            if dequantization == "variational" else None
        )  # fmt: skip
        super().__init__(FlowSequential(*layers), prior(dim), dequantizer, input_shape)
        self.final_shape = final_shape[0]
        self.factored_dims = factored_dims
        self.num_classes, self.task = num_classes, task
        self.hybrid_lambda = hybrid_lambda
        self.class_conditional = conditional
        # The scale stacks, whose outputs the classifier reads; a plain list (not registered twice).
        self._scales = scales
        self.classifier = ScaleClassifier(scale_channels, num_classes, classifier_hidden) if task != "density" else None
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def log_prob_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``log p(x)``, the flow's logdet and the classifier's logits ``(B, num_classes)``
        (``task`` hybrid or classification)."""
        if self.classifier is None:
            raise ValueError("this ResidualFlow has no classifier: build it with task='hybrid' and num_classes.")
        features: list[Tensor] = []
        hooks = [scale.register_forward_hook(lambda m, args, out: features.append(out[0])) for scale in self._scales]
        try:
            log_p, logdet = self.log_prob_and_logdet(x)
        finally:
            for hook in hooks:
                hook.remove()
        return log_p, logdet, self.classifier(features)

    @property
    def hybrid_weight(self) -> float:
        """``lambda``, the weight of ``log p(x)`` in the hybrid objective (``1 / D`` by default)."""
        return 1.0 / math.prod(self.input_shape) if self.hybrid_lambda is None else self.hybrid_lambda

    def hybrid_objective(self, x: Tensor, labels: Tensor) -> HybridTerms:
        """Per sample, in nats: ``objective = -(lambda log p(x) + log p(y | x))`` (for
        ``task="classification"``: ``-log p(y | x)``), with its parts."""
        log_p, logdet, logits = self.log_prob_and_logits(x)
        cross_entropy = F.cross_entropy(logits, check_labels(labels, self.num_classes), reduction="none")
        objective = cross_entropy if self.task == "classification" else cross_entropy - self.hybrid_weight * log_p
        return HybridTerms(objective, cross_entropy, log_p, logdet, logits)

def _squeezed(c: int, h: int, w: int) -> tuple[int, int, int]:
    if h % 2 or w % 2:
        raise ValueError(
            f"Cannot squeeze a {h}x{w} feature map: its sides must be even. "
            "Use fewer scales or set init_squeeze=false."
        )
    return 4 * c, h // 2, w // 2

