"""Elementwise formulas run as one loop each: a C++ operator on the CPU, compiled elsewhere.

A LipSwish derivative is a handful of elementwise operations over the hidden feature maps; run
eagerly, each is its own pass over memory (a 32x64x28x28 map is 6.4 MB), and such passes were
a third of a training step. On the CPU, a formula given an operator of ``torch.ops.iresnet``
(C++ loops of :mod:`iresnet.ops.extension`, built at first use) runs as that operator: on that
map the second-derivative terms take 0.54-0.59 ms instead of 4.2-4.9 ms eagerly (0.78 ms
compiled by Inductor), without importing Inductor (about 70 MiB of resident memory). On other
devices ``torch.compile`` fuses the formula, at about 2 s per process.

Where neither applies (no C++ compiler, ``IRESNET_NATIVE=0``, a dtype the operator does not
take, no Triton) the formula runs eagerly; a failed build or compilation warns once. Shapes are
compiled symbolically, but a new dtype, number of dimensions or size-1 dimension compiles a new
variant; past torch's limit (``torch._dynamo.config.recompile_limit``, 8) new variants run
eagerly while the compiled ones stay in use. ``TORCHDYNAMO_DISABLE=1`` turns compilation off
(torch's own switch).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)

# The dtypes the C++ operators are instantiated for.
NATIVE_DTYPES = (torch.float32, torch.float64)


def _native_dtypes(args: tuple[torch.Tensor, ...]) -> bool:
    """Whether the operators take these tensors: one dtype, float32 or float64, all on the CPU."""
    dtype = args[0].dtype
    return dtype in NATIVE_DTYPES and all(a.dtype == dtype and a.device.type == "cpu" for a in args)


def fused(operator: Callable[[], Callable | None] | None = None) -> Callable[[F], F]:
    """Decorator: ``fn`` (tensors in, tensors out, no autograd) run by a C++ operator on CPU
    tensors of one dtype, float32 or float64, eagerly on other CPU tensors, else compiled with
    dynamic shapes (on every device when there is no operator).

    ``operator()`` returns the operator (same arguments and results as ``fn``), or None where it
    is not available; it is asked at the first CPU call. The eager ``fn`` stays reachable as
    ``.eager`` and the compiled one as ``.compiled``. ``fn`` runs eagerly under ``torch.func``
    transforms (e.g. the batched vector-Jacobian products of ``is_grads_batched``), inside an
    enclosing ``torch.compile`` (which traces it itself), and after a failed compilation.
    """

    def decorate(fn: F) -> F:
        compiled_fn: list[Callable] = []  # made on first use: importing the compiler costs memory
        failed: list[str] = []

        def compiled(*args):
            try:
                if not compiled_fn:
                    compiled_fn.append(torch.compile(fn, dynamic=True, fullgraph=True))
                return compiled_fn[0](*args)
            except torch._dynamo.exc.FailOnRecompileLimitHit:  # torch has warned once itself
                return fn(*args)
            except Exception as err:  # no compiler, no Triton, an unsupported platform
                failed.append(f"{type(err).__name__}: {err}")
                warnings.warn(
                    f"iresnet: compiling {fn.__qualname__} failed ({failed[0].splitlines()[0][:200]}); "
                    "running it eagerly, which is slower. Set TORCHDYNAMO_DISABLE=1 to skip compilation.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return fn(*args)

        @functools.wraps(fn)
        def call(*args):
            if failed or torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
                return fn(*args)
            if operator is not None and args[0].device.type == "cpu":
                native = operator() if _native_dtypes(args) else None
                return fn(*args) if native is None else native(*args)
            return compiled(*args)

        call.eager = fn  # type: ignore[attr-defined]
        call.compiled = compiled  # type: ignore[attr-defined]
        call.failures = failed  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate
