"""Distributions of the Russian-roulette draw ``N`` (the number of extra terms), on ``{0, 1, ...}``.

Each gives ``sample() -> N`` (torch's global RNG, so ``torch.manual_seed`` fixes it) and
``tail(k) = P(N >= k)``, the survival probability that re-weights term ``k`` of the tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ROULETTE_DISTS = ("geometric", "poisson")


@dataclass(frozen=True)
class Geometric:
    """``P(N = k) = p (1-p)^k`` (failures before the first success), so ``P(N >= k) = (1-p)^k``."""

    p: float

    def __post_init__(self) -> None:
        if not 0.0 < self.p <= 1.0:
            raise ValueError(f"geometric p must lie in (0, 1], got {self.p!r}; pass e.g. p=0.5.")

    def sample(self) -> int:
        return int(torch.distributions.Geometric(probs=torch.tensor(self.p)).sample())

    def tail(self, k: int) -> float:
        return (1.0 - self.p) ** k


@dataclass(frozen=True)
class Poisson:
    """``P(N = k) = e^-lam lam^k / k!``; ``P(N >= k) = 1 - CDF(k-1)``, evaluated without
    cancellation as the regularised lower incomplete gamma function ``P(k, lam)``."""

    lam: float

    def __post_init__(self) -> None:
        if not self.lam > 0.0:
            raise ValueError(f"poisson lam must be > 0, got {self.lam!r}; pass e.g. lam=2.0.")

    def sample(self) -> int:
        return int(torch.poisson(torch.tensor(self.lam, dtype=torch.float64)))

    def tail(self, k: int) -> float:
        k_, lam = torch.tensor(float(k), dtype=torch.float64), torch.tensor(self.lam, dtype=torch.float64)
        return float(torch.special.gammainc(k_, lam))
