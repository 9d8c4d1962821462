"""Elementwise formulas run as one loop each: native C++ on the CPU, compiled elsewhere.

A LipSwish derivative is a handful of elementwise operations over the hidden feature maps; run
eagerly, each is its own pass over memory (a 32x64x28x28 map is 6.4 MB), and such passes were
a third of a training step. On the CPU, a formula given a ``native`` twin
(:mod:`iresnet.native.lipswish`, compiled with g++ at first use, about 2 s once per machine)
runs as that twin: on that map the second-derivative terms take 0.54-0.59 ms instead of
4.2-4.9 ms eagerly (0.78 ms compiled by Inductor), without importing Inductor (about 70 MiB of
resident memory). On other devices, and for formulas without a twin, ``torch.compile`` fuses the
formula, at about 2 s per process.

Where neither applies (no C++ compiler or Triton, ``IRESNET_NATIVE=0`` on the CPU, a layout or
dtype the twin does not take) the formula runs eagerly; a failed compilation warns once. Shapes
are compiled symbolically, but a new dtype, number of dimensions or size-1 dimension compiles a
new variant; past torch's limit (``torch._dynamo.config.recompile_limit``, 8) new variants run
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


def fused(native: Callable | None = None) -> Callable[[F], F]:
    """Decorator: ``fn`` (tensors in, tensors out, no autograd) run by ``native`` on CPU
    tensors, else compiled with dynamic shapes.

    ``native`` takes ``fn``'s arguments and returns ``fn``'s result, or None where it does not
    apply. The eager ``fn`` stays reachable as ``.eager`` and the compiled one as
    ``.compiled``. ``fn`` runs eagerly under ``torch.func`` transforms (e.g. the batched
    vector-Jacobian products of ``is_grads_batched``), inside an enclosing ``torch.compile``
    (which traces it itself), and after a failed compilation.
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
            if native is not None and args[0].device.type == "cpu":
                result = native(*args)
                return fn(*args) if result is None else result
            return compiled(*args)

        call.eager = fn  # type: ignore[attr-defined]
        call.compiled = compiled  # type: ignore[attr-defined]
        call.failures = failed  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate
