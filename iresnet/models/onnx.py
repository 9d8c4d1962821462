"""ONNX of a :class:`~iresnet.models.FlowModel`'s density and of its inverse: the program of
:func:`~iresnet.models.export_model`, converted by ``torch.onnx.export(..., dynamo=True)``.

Needs the ``onnx`` extra (``pip install "iresnet[onnx]"``: onnx, onnxscript, and onnxruntime to
run the file). The log-det estimators' Jacobian products are forward-mode under ``torch.export``;
their derivative formulas leave three operators that have no ONNX function. Two are decomposed
first (:data:`ONNX_DECOMPOSITIONS`), one translated by hand:

* ``aten._new_zeros_with_same_feature_meta`` (the zero tangent forward mode starts from):
  ``zeros`` of its shape;
* ``aten.linalg_slogdet`` (:class:`~iresnet.logdet.ExactLogDet`): ``log|det J|`` as the log of
  ONNX's ``Det``, which leaves float32's range for large Jacobians (``|det J|`` below ``1e-38``
  or above ``1e38``): the exact estimator is for small models;
* ``aten.silu_backward`` (LipSwish's derivative ``s (1 + x (1 - s))``, ``s = sigmoid(x)``): torch
  keeps it as one operator (its decomposition is not applied to the formulas' output), so it is
  written in ONNX operators (``custom_translation_table``).

The graph is written as traced (``optimize=False``): onnxscript's optimizer drops multiplications
by constants within rounding of 1, such as :class:`~iresnet.flows.LogitTransform`'s
``1 - 2 alpha = 0.999998``, which moves log-densities by about 1e-3; onnxruntime optimizes the
graph itself when it loads it.

The Hutchinson probes become draws of the ONNX runtime (``RandomNormalLike`` for Gaussian
probes, ``RandomUniformLike`` below 1/2 for Rademacher ones), made at every run: the file's log-densities are fresh draws of the estimator, as eager's are.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
from torch import Tensor
from torch.export import ExportedProgram

from iresnet.models.base import FlowModel
from iresnet.models.export import export_model

aten = torch.ops.aten

# The packages of the onnx extra that writing a file needs (onnxruntime, the extra's third, runs it).
ONNX_EXTRA = ("onnx", "onnxscript")
# The program's inputs and output by what it computes; a class-conditional model's second input
# is "labels".
INPUT_NAMES = {"log_prob": "x", "sample": "z"}
OUTPUT_NAMES = {"log_prob": "log_prob", "sample": "x"}


class OnnxNotInstalledError(ImportError):
    """A package of the ``onnx`` extra is missing."""


def require_onnx() -> None:
    """:class:`OnnxNotInstalledError` naming the fix unless the ``onnx`` extra's converter imports."""
    missing = [name for name in ONNX_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise OnnxNotInstalledError(
            f"ONNX export needs {', '.join(missing)}, not installed here; install the extra: "
            'pip install "iresnet[onnx]".'
        )


def _zeros_with_feature_meta(self: Tensor, other: Tensor, *, self_num_batch_dims: int = 0) -> Tensor:
    return other.new_zeros((*self.shape[:self_num_batch_dims], *other.shape))


def _silu_backward_onnx(grad, x):
    # ONNX graph values in, one out (onnxscript traces this).
    from onnxscript import opset18 as op

    s = op.Sigmoid(x)
    one = op.CastLike(1.0, x)
    return op.Mul(grad, op.Mul(s, op.Add(one, op.Mul(x, op.Sub(one, s)))))


def _slogdet(a: Tensor) -> tuple[Tensor, Tensor]:
    det = torch.linalg.det(a)
    return det.sign(), det.abs().log()


ONNX_DECOMPOSITIONS: dict[object, Callable[..., object]] = {
    aten._new_zeros_with_same_feature_meta.default: _zeros_with_feature_meta,
    aten.linalg_slogdet.default: _slogdet,
}


def input_names(program: ExportedProgram, what: str) -> list[str]:
    """The names of the inputs of ``program`` (of ``what``): ``x`` or ``z``, then ``labels`` for a
    class-conditional model."""
    return [INPUT_NAMES[what], "labels"][: len(program.graph_signature.user_inputs)]


def onnx_program(program: ExportedProgram, what: str) -> torch.onnx.ONNXProgram:
    """The ONNX model of ``program``, an :func:`~iresnet.models.export_model` of ``what``
    (``"log_prob"`` or ``"sample"``); ``.save(path)`` writes the ``.onnx`` file.

    Its inputs are named ``x`` (``log_prob``) or ``z`` (``sample``), then ``labels`` for a
    class-conditional model; its output ``log_prob`` or ``x``.
    """
    require_onnx()
    decomposed = program.run_decompositions(ONNX_DECOMPOSITIONS)
    return torch.onnx.export(
        decomposed, dynamo=True, input_names=input_names(program, what), output_names=[OUTPUT_NAMES[what]],
        custom_translation_table={aten.silu_backward.default: _silu_backward_onnx}, optimize=False, verbose=False,
    )  # fmt: skip


def export_onnx(model: FlowModel, what: str, example: Tensor, context: Tensor | None = None) -> torch.onnx.ONNXProgram:
    """:func:`~iresnet.models.export_model` of ``model``, as ONNX (:func:`onnx_program`)."""
    require_onnx()
    return onnx_program(export_model(model, what, example, context), what)
