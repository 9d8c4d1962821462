"""A summary of a model's Lipschitz constraints: per normalized layer and per residual branch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import nn

from iresnet.lipschitz.spectral_norm import spectral_norm_modules

# Layers whose norm is unbounded unless spectral-normalized; other modules (activations) are
# taken to be 1-Lipschitz.
_LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerLipschitz:
    """One normalized layer: ``sigma`` is the stored estimate for the raw weight and
    ``normalized_sigma = sigma / max(1, sigma / coeff) = min(sigma, coeff)``."""

    name: str
    sigma: float
    coeff: float
    normalized_sigma: float


@dataclass(frozen=True)
class BranchBound:
    """Residual block ``name`` with branch ``name.net``: ``bound`` is the branch's Lipschitz bound in
    its input from the normalized sigmas of ``layers`` (their product for a plain chain), or
    ``inf`` if the branch has linear layers without spectral norm on the path of the input
    (``unnormalized``)."""

    name: str
    bound: float
    layers: tuple[str, ...]
    unnormalized: tuple[str, ...]


@dataclass(frozen=True)
class LipschitzReport:
    """Normalized layers and residual-branch bounds of a model (see :func:`lipschitz_report`)."""

    layers: tuple[LayerLipschitz, ...]
    branches: tuple[BranchBound, ...]

    @property
    def any_bound_reaches_one(self) -> bool:
        """Whether some branch bound is ``>= 1`` (or unknown), i.e. invertibility is not guaranteed."""
        return any(not branch.bound < 1.0 for branch in self.branches)

    @property
    def max_layer_sigma(self) -> float:
        """Largest normalized sigma over the layers (``nan`` if there are none)."""
        return max((layer.normalized_sigma for layer in self.layers), default=math.nan)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "any_bound_reaches_one": self.any_bound_reaches_one,
            "max_layer_sigma": self.max_layer_sigma,
        }

    def __str__(self) -> str:
        width = max((len(row.name) for row in (*self.layers, *self.branches)), default=0)
        width = max(width, len("residual branch"))
        lines = [f"{'layer':<{width}}  {'sigma':>9}  {'coeff':>7}  {'normalized':>10}"]
        lines += [
            f"{row.name:<{width}}  {row.sigma:>9.4f}  {row.coeff:>7.4f}  {row.normalized_sigma:>10.4f}"
            for row in self.layers
        ]
        lines.append(f"{'residual branch':<{width}}  {'bound':>9}")
        for row in self.branches:
            note = f"  unnormalized: {', '.join(row.unnormalized)}" if row.unnormalized else ""
            lines.append(f"{row.name:<{width}}  {row.bound:>9.4f}{note}")
        lines.append(
            f"max layer sigma: {self.max_layer_sigma:.4f}   any bound >= 1: {self.any_bound_reaches_one}"
        )
        return "\n".join(lines)


def _is_residual_block(module: nn.Module) -> bool:
    # Residual blocks are defined elsewhere; recognise them by their shape.
    return isinstance(getattr(module, "net", None), nn.Module) and callable(getattr(module, "inverse", None))


def _branch_bound(
    net: nn.Module, prefix: str, layers: dict[str, LayerLipschitz]
) -> tuple[float, tuple[str, ...], tuple[str, ...]]:
    """The Lipschitz bound of ``net`` in its input, with the normalized and the unnormalized
    linear layers it depends on.

    A spectral-normalized layer counts its normalized sigma and a linear layer without it
    ``inf``; a module that defines ``lipschitz_bound(bound_of)`` composes its parts' bounds
    itself (a dense layer, a context shift, whose context network is not on the path of ``x``);
    any other module with children is taken as the composition of its children (the product of
    their bounds), and a module without children (an activation) as 1-Lipschitz.
    """
    names = {module: name for name, module in net.named_modules(prefix=prefix)}
    normalized: list[str] = []
    unnormalized: list[str] = []

    def bound_of(module: nn.Module) -> float:
        name = names[module]
        if name in layers:
            normalized.append(name)
            return layers[name].normalized_sigma
        if isinstance(module, _LINEAR_LAYERS):
            unnormalized.append(name)
            return math.inf
        if hasattr(module, "lipschitz_bound"):
            return module.lipschitz_bound(bound_of)
        return math.prod(bound_of(child) for child in module.children())

    bound = bound_of(net)
    return bound, tuple(normalized), tuple(unnormalized)


def lipschitz_report(model: nn.Module) -> LipschitzReport:
    """Collect each spectral-normalized layer and the Lipschitz bound of each residual branch.

    Reads the stored ``sigma`` estimates and changes nothing; call
    :func:`~iresnet.lipschitz.update_spectral_norms` first for converged values. A residual block
    is any module with an ``nn.Module`` attribute ``net`` (its branch) and a callable ``inverse``;
    the branch bound is computed as :func:`_branch_bound` says: the product of its normalized
    sigmas for a plain chain of layers and 1-Lipschitz activations, the dense-layer bound for
    i-DenseNet branches, and the bound in ``x`` for every fixed context for conditional ones.
    """
    layers = {}
    for name, _, sn in spectral_norm_modules(model):
        sigma = sn.sigma.item()
        layers[name] = LayerLipschitz(name, sigma, sn.coeff, min(sigma, sn.coeff))
    branches = []
    for block_name, block in model.named_modules():
        if not _is_residual_block(block):
            continue
        prefix = f"{block_name}.net" if block_name else "net"
        bound, normalized, unnormalized = _branch_bound(block.net, prefix, layers)
        branches.append(BranchBound(block_name, bound, normalized, unnormalized))
    return LipschitzReport(tuple(layers.values()), tuple(branches))
