"""Base distributions for flows: standard normal and a learned diagonal Gaussian."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_LOG_2PI = math.log(2 * math.pi)


class StandardNormal(nn.Module):
    """``N(0, I)`` on ``D`` dimensions. ``log_prob(z: (B, D)) -> (B,)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        # Tracks the device and dtype of the model so samples land next to the weights.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (z.pow(2).sum(1) + self.dim * _LOG_2PI)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(n, self.dim, generator=generator, device=self._anchor.device, dtype=self._anchor.dtype)
        return temperature * eps


class DiagonalGaussian(nn.Module):
    """Learned ``N(mu, diag(exp(2 log_std)))`` on ``D`` dimensions, initialized at ``N(0, I)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mean = nn.Parameter(torch.zeros(dim))
        self.log_std = nn.Parameter(torch.zeros(dim))

    def log_prob(self, z: Tensor) -> Tensor:
        u = (z - self.mean) * torch.exp(-self.log_std)
        return -0.5 * (u.pow(2).sum(1) + self.dim * _LOG_2PI) - self.log_std.sum()

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(n, self.dim, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + temperature * self.log_std.exp() * eps


def get_prior(name: str, dim: int) -> nn.Module:
    """``"normal"`` (standard normal) or ``"learned"`` (diagonal Gaussian with learned mean and scale)."""
    priors = {"normal": StandardNormal, "learned": DiagonalGaussian}
    if name not in priors:
        raise ValueError(f"Unknown prior {name!r}; choose one of {sorted(priors)}.")
    return priors[name](dim)
