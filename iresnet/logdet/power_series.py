"""Truncated power series: ``sum_{k=1}^{n} (-1)^(k+1) tr(J^k) / k`` (biased by the dropped tail)."""

from __future__ import annotations

from iresnet.logdet._validate import check_int_at_least
from iresnet.logdet.base import SeriesLogDet


class PowerSeriesLogDet(SeriesLogDet):
    """The i-ResNet estimator (Behrmann et al. 2019): the first ``n_terms`` terms, weights 1.

    ``training`` does not change it. See :class:`~iresnet.logdet.base.SeriesLogDet` for the
    call, gradient modes and statistics.
    """

    def __init__(
        self,
        n_terms: int = 5,
        n_probes: int = 1,
        probe: str = "gaussian",
        grad: str = "backprop",
        memory_efficient: bool = False,
        chunk_size: int | None = None,
        chunk_pixels: int | None = None,
    ) -> None:
        check_int_at_least("n_terms", n_terms, 1)
        super().__init__(n_probes, probe, grad, memory_efficient, chunk_size, chunk_pixels)
        self.n_terms = n_terms

    def coefficients(self, training: bool) -> list[float]:
        return [1.0] * self.n_terms

    def _settings(self) -> dict[str, object]:
        return {"n_terms": self.n_terms, **super()._settings()}
