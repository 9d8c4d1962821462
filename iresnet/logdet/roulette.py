"""Unbiased Russian-roulette power series (Residual Flows, Chen et al. 2019)."""

from __future__ import annotations

import torch

from iresnet.logdet._validate import check_choice, check_int_at_least
from iresnet.logdet.base import SeriesLogDet
from iresnet.logdet.distributions import ROULETTE_DISTS, Geometric, Poisson


class RouletteLogDet(SeriesLogDet):
    """Unbiased estimate of ``log det(I + J)`` with a random number of series terms.

    Each call draws one ``N ~ dist`` (shared by the batch) and sums ``n = N + m`` terms,
    ``m = n_exact_terms`` when ``training`` else ``eval_exact_terms``, with weights

        c_k = 1                     for k <= m,
        c_k = 1 / P(N >= k - m)     for m < k <= m + N,

    so that ``E_N[sum_k c_k a_k] = sum_{k>=1} a_k`` for the series terms ``a_k``. Evaluation
    (``training=False``) thus uses ``eval_exact_terms`` terms plus the roulette tail, as the
    reference implementation does. Defaults are those of Residual Flows: Poisson(2) draw,
    2 exact terms, Neumann gradient, gradient computed in the forward pass. ``p`` is used by
    ``dist="geometric"`` only, ``lam`` by ``dist="poisson"`` only.

    Besides ``last_n_terms`` and ``last_logdet`` it records ``last_draw`` (``N``).
    """

    def __init__(
        self,
        dist: str = "poisson",
        p: float = 0.5,
        lam: float = 2.0,
        n_exact_terms: int = 2,
        n_probes: int = 1,
        probe: str = "gaussian",
        eval_exact_terms: int = 20,
        grad: str = "neumann",
        memory_efficient: bool = True,
        chunk_size: int | None = None,
        chunk_pixels: int | None = None,
    ) -> None:
        check_choice("dist", dist, ROULETTE_DISTS)
        check_int_at_least("n_exact_terms", n_exact_terms, 1)
        check_int_at_least("eval_exact_terms", eval_exact_terms, 1)
        super().__init__(n_probes, probe, grad, memory_efficient, chunk_size, chunk_pixels)
        self.dist = Geometric(p) if dist == "geometric" else Poisson(lam)
        self.n_exact_terms = n_exact_terms
        self.eval_exact_terms = eval_exact_terms
        self.last_draw: int | None = None

    # Drawn eagerly, also inside a compiled caller: a traced draw would bake one N into the graph.
    # The caller's graph breaks here and is specialized on the number of terms it gets.
    @torch.compiler.disable
    def coefficients(self, training: bool) -> list[float]:
        n_exact = self.n_exact_terms if training else self.eval_exact_terms
        draw = self.dist.sample()
        self.last_draw = draw
        return [1.0] * n_exact + [1.0 / self.dist.tail(j) for j in range(1, draw + 1)]

    def _settings(self) -> dict[str, object]:
        return {
            "dist": self.dist,
            "n_exact_terms": self.n_exact_terms,
            "eval_exact_terms": self.eval_exact_terms,
            **super()._settings(),
        }
