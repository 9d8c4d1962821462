"""Importing iresnet changes nothing in the process: no settings, no warning filters, no builds."""

import json
import os
import subprocess
import sys

_IMPORT_ALL = """
import gc, importlib, json, os, pkgutil, sys, warnings
# The third-party libraries iresnet imports set their own filters when imported; load them first.
import hydra, matplotlib, matplotlib.pyplot, numpy, omegaconf, pytorch_lightning, torch, torchvision

def state():
    return {
        "warning_filters": [repr(f) for f in warnings.filters],
        "threads": [torch.get_num_threads(), torch.get_num_interop_threads()],
        "precision": [torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision(),
                      torch.are_deterministic_algorithms_enabled(), str(torch.get_default_dtype())],
        "environ": dict(os.environ),
        "gc": [gc.isenabled(), gc.get_threshold(), gc.get_freeze_count()],
    }

COMPILERS = ("torch.utils.cpp_extension", "torch._inductor.compile_fx", "torch._dynamo.eval_frame")
compilers_before = {m for m in COMPILERS if m in sys.modules}
before = state()
import iresnet
modules = [m.name for m in pkgutil.walk_packages(iresnet.__path__, "iresnet.")]
for name in modules:
    importlib.import_module(name)
after = state()
loaded = [line.split()[-1] for line in open("/proc/self/maps") if ".so" in line]
print(json.dumps({
    "modules": modules,
    "changed": sorted(k for k in before if before[k] != after[k]),
    "compilers": sorted(m for m in COMPILERS if m in sys.modules and m not in compilers_before),
    "iresnet_libraries": sorted({path for path in loaded if "iresnet" in path or "torch_extensions" in path}),
}))
"""


def test_importing_every_module_changes_nothing_and_compiles_nothing(tmp_path):
    extensions = tmp_path / "torch_extensions"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions)}
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALL], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    rooms = {name.split(".")[1] for name in result["modules"]}
    assert {"cli", "bench", "ops", "lipschitz", "training", "runtime"} <= rooms  # every room was imported
    assert result["changed"] == []  # warning filters, threads, precision flags, environment, collector
    assert result["compilers"] == [] and result["iresnet_libraries"] == []
    assert not extensions.exists()  # nothing built

