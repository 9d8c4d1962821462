"""Elementwise formulas compiled into one loop each, with the eager formula as the fallback.

A LipSwish derivative is a handful of elementwise operations over the hidden feature maps; run
eagerly, each is its own pass over memory (a 32x64x28x28 map is 6.4 MB), and such passes were
a third of a training step. ``torch.compile`` (Inductor) fuses a formula into one C++/OpenMP
loop: on that map the second-derivative terms take 1.4 ms instead of 4.2 ms, the forward with
its slope 1.3 ms instead of 1.4 ms. Compiling costs about 2 s per process, once.

Compilation needs a C++ compiler (CPU) or Triton (CUDA). Where it fails, the formula runs
eagerly for the rest of the process after one warning. Shapes are compiled symbolically, but a
new dtype, number of dimensions or size-1 dimension compiles a new variant; past torch's limit
(``torch._dynamo.config.recompile_limit``, 8) new variants run eagerly while the compiled ones
stay in use. ``TORCHDYNAMO_DISABLE=1`` turns compilation off (torch's own switch).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def fused(fn: F) -> F:
    """``fn`` (tensors in, tensors out, no autograd) compiled with dynamic shapes.

    The eager ``fn`` stays reachable as ``.eager``. It is used under ``torch.func`` transforms
    (e.g. the batched vector-Jacobian products of ``is_grads_batched``), inside an enclosing
    ``torch.compile`` (which traces it itself), and after a failed compilation.
    """
    compiled: list[Callable] = []  # made on first use: importing the compiler costs memory
    failed: list[str] = []

    @functools.wraps(fn)
    def call(*args):
        if failed or torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
            return fn(*args)
        try:
            if not compiled:
                compiled.append(torch.compile(fn, dynamic=True, fullgraph=True))
            return compiled[0](*args)
        except torch._dynamo.exc.FailOnRecompileLimitHit:  # torch has warned once itself
            return fn(*args)
        except Exception as err:  # no compiler, no Triton, an unsupported platform
            failed.append(f"{type(err).__name__}: {err}")
            warnings.warn(
                f"iresnet: compiling {fn.__qualname__} failed ({failed[0].splitlines()[0][:200]}); "
                "running it eagerly, which is slower. Set TORCHDYNAMO_DISABLE=1 to skip compilation.",
                RuntimeWarning,
                stacklevel=2,
            )
            return fn(*args)

    call.eager = fn  # type: ignore[attr-defined]
    call.failures = failed  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]
