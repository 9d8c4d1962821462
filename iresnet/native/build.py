"""Compiling the C++ sources of this folder at first use, cached on disk, loaded with ctypes.

A source compiles once per machine and torch version (1-3 s with g++) into
``$IRESNET_CACHE_DIR`` (default ``~/.cache/iresnet/native``), under a name that hashes the
source, the flags, torch's version and the compiler. The sources use only torch's C++ headers
and libraries, both in the torch wheel, and expose plain C functions. Without a C++ compiler,
or with ``IRESNET_NATIVE=0``, :func:`load_library` returns None and callers use their PyTorch
code instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
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
"""Why a library is not loaded, by name (empty where all loaded or none was asked for)."""


def enabled() -> bool:
    """Whether native code may be used: ``IRESNET_NATIVE=0`` turns it off."""
    return os.environ.get("IRESNET_NATIVE", "1") != "0"


def cache_dir() -> Path:
    """Where compiled libraries are kept: ``$IRESNET_CACHE_DIR``, else ``~/.cache/iresnet/native``."""
    if "IRESNET_CACHE_DIR" in os.environ:
        return Path(os.environ["IRESNET_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iresnet" / "native"


@functools.cache
def _compiler() -> tuple[str, str]:
    """The C++ compiler's command and its ``--version`` text (part of the cache key)."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    return compiler, subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout


def _command(source: Path, output: Path, compiler: str) -> list[str]:
    torch_dir = Path(torch.__file__).parent
    torch_lib = torch_dir / "lib"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    capability = _CAPABILITY_FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])
    return [
        compiler, "-O3", "-shared", "-fPIC", "-std=c++17", "-fopenmp", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *capability, f"-I{torch_dir / 'include'}", str(source), f"-L{torch_lib}", "-ltorch_cpu", "-lc10",
        f"-Wl,-rpath,{torch_lib}", "-o", str(output),
    ]  # fmt: skip


def _build(name: str) -> Path:
    """The compiled library of ``SOURCES/<name>.cpp``, built now if not in the cache."""
    source = SOURCES / f"{name}.cpp"
    compiler, version = _compiler()
    # the source's text, not its path: an editable and a plain install share the library
    command = _command(Path("SOURCE"), Path("OUT"), compiler)
    key = hashlib.sha256("\0".join([source.read_text(), *command, torch.__version__, version]).encode())
    target = cache_dir() / f"{name}-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: processes building at once (DDP ranks) never
    # load a half-written file.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        done = subprocess.run(_command(source, built, compiler), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[-1500:]}")
        os.replace(built, target)
    return target


@functools.cache
def load_library(name: str) -> ctypes.CDLL | None:
    """``SOURCES/<name>.cpp`` compiled and loaded, or None (the reason in ``failures[name]``).

    A failed build warns once; ``IRESNET_NATIVE=0`` returns None without a warning.
    """
    if not enabled():
        failures[name] = "turned off by IRESNET_NATIVE=0"
        return None
    try:
        return ctypes.CDLL(str(_build(name)))
    except (OSError, RuntimeError) as err:
        failures[name] = f"{type(err).__name__}: {err}"
        warnings.warn(
            f"iresnet: building its native code {name!r} failed ({failures[name][:300]}); using the slower "
            "PyTorch code instead. Set IRESNET_NATIVE=0 to skip the build.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
