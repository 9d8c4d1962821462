"""Log-determinant estimators for residual blocks ``y = x + g(x)``.

Each estimator is called as ``est(net, x, training) -> (g(x), logdet)`` with
``logdet = log det(I + dg/dx)`` per sample, shape ``(B,)``.
"""

from iresnet.logdet.exact import ExactLogDet, batch_jacobian, exact_logdet
from iresnet.logdet.power_series import PowerSeriesLogDet
from iresnet.logdet.probes import sample_probe
from iresnet.logdet.roulette import RouletteLogDet

__all__ = [
    "ExactLogDet",
    "PowerSeriesLogDet",
    "RouletteLogDet",
    "batch_jacobian",
    "exact_logdet",
    "sample_probe",
]
