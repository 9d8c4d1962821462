"""The C++ kernels of this room, built at first use by ``torch.utils.cpp_extension``.

:func:`load_extension` compiles ``<name>.cpp`` once per machine and torch version (torch's own
JIT build with ninja, cached under ``$TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``; a changed source or flag rebuilds) and loads it with
``torch.ops.load_library``: the operators it defines with ``TORCH_LIBRARY_FRAGMENT`` appear
under ``torch.ops.iresnet``. Nothing is built at import; callers ask when they first need an
operator. Without a C++ compiler or ninja, or with ``IRESNET_NATIVE=0``, it returns False and
callers run their PyTorch formulas instead; a failed build warns once.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

SOURCES = Path(__file__).resolve().parent
# x86 vector extensions per torch CPU capability, as torch's own kernels are built for them
# (ATen's Vectorized<T> picks its implementation from the CPU_CAPABILITY_* macro).
_CAPABILITY_FLAGS = {
    "AVX512": ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512dq", "-mavx512vl",
               "-mavx512bw", "-mfma"],
    "AVX2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma", "-mf16c"],
}  # fmt: skip

failures: dict[str, str] = {}
"""Why an extension is not loaded, by name (empty where all loaded or none was asked for)."""


def enabled() -> bool:
    """Whether native kernels may be built and used: ``IRESNET_NATIVE=0`` turns them off."""
    return os.environ.get("IRESNET_NATIVE", "1") != "0"


def build_flags() -> list[str]:
    """Compiler flags: optimized, vectorized as torch's kernels are for this CPU, and with OpenMP
    where torch's thread pool is OpenMP's (``at::parallel_for`` is inlined from torch's headers
    and runs serially in code compiled without it)."""
    openmp = ["-fopenmp"] if "OpenMP" in torch.__config__.parallel_info().split("ATen parallel backend:")[-1] else []
    return ["-O3", *openmp, *_CAPABILITY_FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])]


@contextmanager
def _quiet_cuda_probe():
    """Mutes the note torch's CUDA builds log when ``cpp_extension`` is imported on a machine
    without CUDA (it looks for a CUDA toolkit that a CPU extension does not use)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@functools.cache
def load_extension(name: str) -> bool:
    """Builds (if needed) and loads ``SOURCES/<name>.cpp``; whether its operators are available.

    The reason for False is kept in ``failures[name]``.
    """
    if not enabled():
        failures[name] = "turned off by IRESNET_NATIVE=0"
        return False
    with _quiet_cuda_probe():
        from torch.utils import cpp_extension  # imports setuptools: only when a build is asked for

    try:
        cpp_extension.load(
            name=f"iresnet_{name}",
            sources=[str(SOURCES / f"{name}.cpp")],
            extra_cflags=build_flags(),
            extra_ldflags=[flag for flag in build_flags() if flag == "-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
    except Exception as err:  # no compiler or ninja, a failed compilation, a library that does not load
        failures[name] = f"{type(err).__name__}: {str(err).strip()[-600:]}"
        warnings.warn(
            f"iresnet: building its C++ kernels {name!r} failed ({failures[name][:300]}); using the slower "
            "PyTorch code instead. Set IRESNET_NATIVE=0 to skip the build.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True
