"""``torch.export`` of a :class:`~iresnet.models.FlowModel`'s density and of its inverse.

An exported program is one graph with fixed control flow, so the model must compute with a fixed
amount of work: a log-det estimator with a fixed number of terms (``PowerSeriesLogDet`` or
``ExactLogDet``, not the roulette, whose number of terms is drawn per call) and inverse solvers
with a fixed number of iterations (``atol = rtol = 0``). The batch size is the example's: the
per-sample Jacobian products are traced for a static shape.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.export import ExportedProgram, export

from iresnet.logdet import RouletteLogDet
from iresnet.models.base import FlowModel

# What can be exported, and the model's method that computes it: log p(x) from images (or points),
# or samples from prior codes (the inverse of the flow).
METHODS = {"log_prob": "log_prob", "sample": "inverse"}
WHATS = tuple(METHODS)


class ModelMethod(nn.Module):
    """A method of ``model`` as a module's forward: ``(inputs, context=None) -> model.<method>(inputs,
    context)``; ``log_prob``: ``x: (B, ...) -> (B,)``, ``inverse``: ``z: (B, D) -> x``."""

    def __init__(self, model: FlowModel, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        return getattr(self.model, self.method)(inputs, context)


def check_exportable(model: FlowModel, what: str) -> None:
    """``ValueError`` naming the fix unless ``model`` computes ``what`` with a fixed amount of work."""
    if what not in WHATS:
        raise ValueError(f"what must be one of {WHATS}, got {what!r}.")
    for block in model.residual_blocks():
        if what == "log_prob" and isinstance(block.logdet, RouletteLogDet):
            raise ValueError(
                "the Russian-roulette estimator draws its number of terms per call, which an exported "
                "graph cannot; export with a fixed one, e.g. model.set_logdet_estimator(PowerSeriesLogDet(n_terms=20)) "
                "(iresnet-export: logdet=...)."
            )
        if what == "sample" and not getattr(block.solver, "fixed_iterations", False):
            raise ValueError(
                "the inverse solver stops when it converges, which an exported graph cannot; export with a "
                "fixed number of iterations, e.g. model.set_inverse_solver(FixedPointInverse(max_iter=100, "
                "atol=0, rtol=0)) (iresnet-export: max_iter=...)."
            )


def export_model(model: FlowModel, what: str, example: Tensor, context: Tensor | None = None) -> ExportedProgram:
    """The ``ExportedProgram`` of ``model.log_prob`` (``what="log_prob"``, ``example``: images) or of
    ``model.inverse`` (``"sample"``, ``example``: codes), for batches of ``example``'s shape.

    ``model`` must be in eval mode (ActNorm initialized, spectral norms fixed) and pass
    :func:`check_exportable`. Random Hutchinson probes stay random in the program (its ``normal``
    draws from torch's global generator when it runs).
    """
    check_exportable(model, what)
    if model.training:
        raise ValueError("export a model in eval mode: call model.eval() first.")
    wrapper = ModelMethod(model, METHODS[what])
    return export(wrapper, (example,) if context is None else (example, context))
