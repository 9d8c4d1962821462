"""Priors on the codes ``z``: modules that return ``torch.distributions`` objects.

A prior is called as ``prior(context)`` and returns a distribution whose event shape is one code:
``(D,)`` for the flat codes of the presets. Unconditional priors ignore the context and have
batch shape ``()``; conditional ones return batch shape ``(B,)``, one distribution per row of the
context. :class:`DistributionPrior` wraps any fixed ``torch.distributions`` object so that its
tensors move with ``.to(device)`` and are saved in ``state_dict``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal


def _tensors(obj: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Tensor]]:
    """``(attribute path, tensor)`` for every tensor held by a distribution, its nested
    distributions (``base_dist``, a mixture's parts) and lists of them."""
    items = vars(obj).items() if isinstance(obj, Distribution) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        if isinstance(value, Tensor):
            yield (*path, str(key)), value
        elif isinstance(value, (Distribution, list)):
            yield from _tensors(value, (*path, str(key)))


def _set(obj: object, path: tuple[str, ...], value: Tensor) -> None:
    for key in path[:-1]:
        obj = obj[int(key)] if isinstance(obj, list) else getattr(obj, key)
    if isinstance(obj, list):
        obj[int(path[-1])] = value
    else:
        setattr(obj, path[-1], value)


class DistributionPrior(nn.Module):
    """A fixed ``torch.distributions`` prior as a module: ``forward(context=None)`` returns it.

    The module keeps its own copy of ``distribution``. Every tensor the copy holds (its parameters, those of nested distributions, and
    cached derived ones such as a Cholesky factor) is registered as a buffer, so the prior moves
    with ``.to(device)`` / ``.double()`` and is saved in and restored from checkpoints.
    """

    def __init__(self, distribution: Distribution) -> None:
        super().__init__()
        if not isinstance(distribution, Distribution):
            raise TypeError(f"DistributionPrior takes a torch.distributions.Distribution, got {type(distribution).__name__}.")
        self.distribution = copy.deepcopy(distribution)
        self._paths: list[tuple[tuple[str, ...], str]] = []
        for path, tensor in _tensors(self.distribution):
            name = "__".join(path)
            self.register_buffer(name, tensor)
            self._paths.append((path, name))

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        # The buffers were replaced by moved or cast copies: point the distribution at them.
        for path, name in self._paths:
            _set(self.distribution, path, getattr(self, name))
        return self

    def forward(self, context: Tensor | None = None) -> Distribution:
        return self.distribution

    def extra_repr(self) -> str:
        return repr(self.distribution)


def _gaussian(mean: Tensor, log_std: Tensor) -> Distribution:
    # validate_args=False: the scale is positive by construction, and validation would read it
    # back from the device on every call.
    return Independent(Normal(mean, log_std.exp(), validate_args=False), 1, validate_args=False)


class StandardNormal(nn.Module):
    """``N(0, I)`` on ``D`` dimensions: event shape ``(D,)``, batch shape ``()``. Ignores the context."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        # Buffers, so samples land on the model's device and in its dtype.
        self.register_buffer("mean", torch.zeros(dim), persistent=False)
        self.register_buffer("log_std", torch.zeros(dim), persistent=False)

    def forward(self, context: Tensor | None = None) -> Distribution:
        return _gaussian(self.mean, self.log_std)


class DiagonalGaussian(nn.Module):
    """Learned ``N(mu, diag(exp(2 log_std)))`` on ``D`` dimensions, initialized at ``N(0, I)``.
    Ignores the context."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mean = nn.Parameter(torch.zeros(dim))
        self.log_std = nn.Parameter(torch.zeros(dim))

    def forward(self, context: Tensor | None = None) -> Distribution:
        return _gaussian(self.mean, self.log_std)


class ClassConditionalGaussian(nn.Module):
    """``p(z | y) = N(mu_y, diag(exp(2 log_std_y)))``, learned per class, initialized at ``N(0, I)``.

    ``forward(labels)``: int64 ``(B,)`` in ``[0, num_classes)`` -> batch shape ``(B,)``, event
    shape ``(D,)``.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes}.")
        self.dim, self.num_classes = dim, num_classes
        self.mean = nn.Embedding(num_classes, dim)
        self.log_std = nn.Embedding(num_classes, dim)
        nn.init.zeros_(self.mean.weight)
        nn.init.zeros_(self.log_std.weight)

    def forward(self, context: Tensor) -> Distribution:
        labels = check_labels(context, self.num_classes)
        return _gaussian(self.mean(labels), self.log_std(labels))


class ConditionalGaussian(nn.Module):
    """``p(z | c) = N(mu(c), diag(exp(2 log_std(c))))`` with ``mu, log_std`` an MLP of features.

    ``forward(context)``: float ``(B, context_features)`` -> batch shape ``(B,)``, event shape
    ``(D,)``. The last layer starts at zero, so the prior starts as ``N(0, I)`` for every context.
    """

    def __init__(self, dim: int, context_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.dim, self.context_features = dim, context_features
        self.net = nn.Sequential(nn.Linear(context_features, hidden), nn.SiLU(), nn.Linear(hidden, 2 * dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, context: Tensor) -> Distribution:
        if context is None or context.dim() != 2 or context.shape[1] != self.context_features:
            shape = None if context is None else tuple(context.shape)
            raise ValueError(
                f"ConditionalGaussian needs a context of shape (B, {self.context_features}), got {shape}."
            )
        mean, log_std = self.net(context).chunk(2, dim=1)
        return _gaussian(mean, log_std)


def check_labels(labels: Tensor | None, num_classes: int) -> Tensor:
    """``labels`` as int64 ``(B,)`` in ``[0, num_classes)``; ``ValueError`` naming what is wrong."""
    if labels is None:
        raise ValueError(
            f"this model is class-conditional ({num_classes} classes): pass the labels as the context, "
            "e.g. model.log_prob(x, labels) or iresnet-sample label=3."
        )
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"class labels must be integers of shape (B,), got {labels.dtype} {tuple(labels.shape)}.")
    # The range is read on the host, so a traced caller (torch.compile, torch.export) skips it.
    if not torch.compiler.is_compiling() and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"class labels must lie in [0, {num_classes - 1}], got values in [{int(labels.min())}, {int(labels.max())}]."
        )
    return labels.long()
