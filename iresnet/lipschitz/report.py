"""A summary of a model's Lipschitz constraints: per normalized layer and per residual branch.

The norms are computed afresh from the weights, not read from the power-iteration estimates that
the normalization divides by: a stale estimate (the weights moved since the last refresh) is the
failure the report is there to show.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from iresnet.lipschitz.spectral_norm import spectral_norm_modules
from iresnet.lipschitz.update import top_singular_pairs

# The fresh norms: float64 Lanczos to a Ritz residual of (atol + rtol sigma) sigma, so sigma is
# within about (atol + rtol sigma) / 2 of the operator norm, far inside COEFF_SLACK. Restarts of
# 48 products: with 24 the clustered spectra of trained 3x3 convolutions stall short of it.
_ATOL, _RTOL, _LANCZOS_STEPS = 1e-6, 1e-6, 48
# A layer counts as above its coeff beyond this relative slack: the refresh that training and
# validation run (update_spectral_norms, rtol 1e-4) leaves its estimate that close below the norm.
COEFF_SLACK = 1e-3

# Layers whose norm is unbounded unless spectral-normalized; other modules (activations) are
# taken to be 1-Lipschitz.
_LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerLipschitz:
    """One normalized layer ``W_sn = W / max(1, estimate / coeff)``.

    ``sigma``: ``||A(W)||_2`` of the raw weight, computed afresh; ``estimate``: the stored
    power-iteration estimate ``<u, A(W) v>`` the layer divides by (an eval-mode forward);
    ``normalized_sigma``: ``||A(W_sn)||_2 = sigma / max(1, estimate / coeff)``, the norm of the
    weight the layer uses, which exceeds ``coeff`` when the estimate is stale (below ``sigma``);
    ``converged``: whether the fresh norm met its tolerance.
    """

    name: str
    sigma: float
    coeff: float
    normalized_sigma: float
    estimate: float = math.nan
    converged: bool = True

    @property
    def above_coeff(self) -> bool:
        """Whether the used weight's norm exceeds ``coeff`` beyond :data:`COEFF_SLACK` (or is unknown)."""
        return not self.normalized_sigma <= self.coeff * (1 + COEFF_SLACK)


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
        """Largest norm of a used (normalized) weight over the layers (``nan`` if there are none)."""
        return max((layer.normalized_sigma for layer in self.layers), default=math.nan)

    @property
    def layers_above_coeff(self) -> tuple[LayerLipschitz, ...]:
        """The layers whose used weight's norm exceeds their ``coeff`` (a stale estimate)."""
        return tuple(layer for layer in self.layers if layer.above_coeff)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "any_bound_reaches_one": self.any_bound_reaches_one,
            "max_layer_sigma": self.max_layer_sigma,
        }

    def __str__(self) -> str:
        width = max((len(row.name) for row in (*self.layers, *self.branches)), default=0)
        width = max(width, len("residual branch"))
        lines = [f"{'layer':<{width}}  {'sigma':>9}  {'estimate':>9}  {'coeff':>7}  {'normalized':>10}"]
        lines += [
            f"{row.name:<{width}}  {row.sigma:>9.4f}  {row.estimate:>9.4f}  {row.coeff:>7.4f}  "
            f"{row.normalized_sigma:>10.4f}{'  > coeff: stale estimate' if row.above_coeff else ''}"
            for row in self.layers
        ]
        lines.append(f"{'residual branch':<{width}}  {'bound':>9}")
        for row in self.branches:
            note = f"  unnormalized: {', '.join(row.unnormalized)}" if row.unnormalized else ""
            lines.append(f"{row.name:<{width}}  {row.bound:>9.4f}{note}")
        lines.append(
            f"max layer sigma (normalized): {self.max_layer_sigma:.4f}   any bound >= 1: {self.any_bound_reaches_one}"
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


def unnormalized_layers(net: nn.Module) -> tuple[str, ...]:
    """The linear and convolutional layers of a residual branch ``net`` on the path of its input
    that have no spectral norm (as :func:`_branch_bound` walks it; a context network is not on
    that path), named as in the block, ``net.<path>``. Reads no weights."""
    names = (".".join(filter(None, ("net", name))) for name, _, _ in spectral_norm_modules(net))
    return _branch_bound(net, "net", {name: LayerLipschitz(name, 0.0, 0.0, 0.0) for name in names})[2]


def lipschitz_report(model: nn.Module) -> LipschitzReport:
    """Each spectral-normalized layer's norms and the Lipschitz bound of each residual branch.

    Every layer's ``||A(W)||_2`` is computed afresh (:func:`~iresnet.lipschitz.update.top_singular_pairs`:
    float64 Lanczos on the real operator, a whole convolution for k x k kernels, from the stored
    ``v`` plus a random vector from a generator of its own, to ``sigma`` within about ``1e-6``), and
    the used weight's norm is that divided by ``max(1, estimate / coeff)``, the rescale an
    eval-mode forward applies. Nothing is written: the model's buffers and the global random
    stream are left as they were. A lazy convolution not yet initialized reports ``nan``.

    A residual block is any module with an ``nn.Module`` attribute ``net`` (its branch) and a
    callable ``inverse``; the branch bound is computed as :func:`_branch_bound` says: the product
    of its normalized sigmas for a plain chain of layers and 1-Lipschitz activations, the
    dense-layer bound for i-DenseNet branches, and the bound in ``x`` for every fixed context for
    conditional ones.
    """
    modules = list(spectral_norm_modules(model))
    ready = [(name, module, sn) for name, module, sn in modules if sn.initialized]
    device = ready[0][1].parametrizations.weight.original.device if ready else torch.device("cpu")
    pairs = top_singular_pairs(
        ready, _ATOL, _RTOL, lanczos_steps=_LANCZOS_STEPS, generator=torch.Generator(device=device).manual_seed(0)
    )
    with torch.no_grad():  # one read back for all layers
        rows = [torch.stack([pairs[name].sigma, sn.estimate(module.parametrizations.weight.original).double()])
                for name, module, sn in ready]  # fmt: skip
    fresh = dict(zip((name for name, _, _ in ready), torch.stack(rows).tolist() if rows else []))
    layers = {}
    for name, _, sn in modules:
        sigma, estimate = fresh.get(name, (math.nan, math.nan))
        normalized = sigma / max(1.0, estimate / sn.coeff)
        converged = name in pairs and pairs[name].converged
        layers[name] = LayerLipschitz(name, sigma, sn.coeff, normalized, estimate, converged)
    branches = []
    for block_name, block in model.named_modules():
        if not _is_residual_block(block):
            continue
        prefix = f"{block_name}.net" if block_name else "net"
        bound, normalized, unnormalized = _branch_bound(block.net, prefix, layers)
        branches.append(BranchBound(block_name, bound, normalized, unnormalized))
    return LipschitzReport(tuple(layers.values()), tuple(branches))
