"""Process settings: applied by the commands' runtime group, never by importing iresnet."""

import os
import subprocess
import sys

import pytest

from iresnet.runtime import apply_runtime

_FAULTS = """
import resource, sys, torch
from iresnet.runtime import apply_runtime
if sys.argv[1] == "import":
    import iresnet.cli.train, iresnet.cli.bench  # the command modules, without running a command
applied = apply_runtime({"malloc": sys.argv[1]}) if sys.argv[1] in ("retain", "default") else []
def step():  # feature maps alive together, then all freed, as in a training step
    maps = [torch.empty(10_000_000).fill_(1) for _ in range(2)]
for _ in range(3):  # the heap grows to its working size
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(any("keeps freed blocks" in line for line in applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    applied, faults = done.stdout.split()
    return applied, int(faults)


glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


@pytest.fixture(scope="module")
def default_faults() -> int:
    applied, faults = _faults("default")
    # glibc maps blocks over 32 MiB afresh whatever it has seen (smaller ones depend on its
    # history): 10 steps x 2 x 40 MB are ~195,000 page faults.
    assert applied == "False" and faults > 100_000
    return faults


@glibc
def test_retain_reuses_freed_blocks_instead_of_faulting_them_in(default_faults):
    applied, faults = _faults("retain")
    assert applied == "True"
    # Reused blocks need none once the heap has its working size (rarely it grows once more).
    assert faults < default_faults / 10


@glibc
def test_users_malloc_tunables_and_preloaded_allocators_win(default_faults):
    applied, faults = _faults("retain", MALLOC_MMAP_THRESHOLD_="131072")
    assert applied == "False" and faults > default_faults / 2
    applied, _ = _faults("retain", LD_PRELOAD="")  # an empty preload is none
    assert applied == "True"


@glibc
def test_importing_the_commands_leaves_malloc_alone(default_faults):
    _, faults = _faults("import")
    assert faults > default_faults / 2


def test_apply_runtime_sets_threads_and_reports_what_it_did(monkeypatch):
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setattr("warnings.filters", list(__import__("warnings").filters))
    try:
        applied = apply_runtime({"threads": 1, "malloc": "default", "quiet_lightning_notes": True})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert applied[0] == "torch threads 1" and "muted" in applied[-1]
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    assert "allocator tcmalloc (LD_PRELOAD)" in apply_runtime({"malloc": "retain"})


@pytest.mark.parametrize(
    "settings, message",
    [({"threads": 0}, "runtime.threads"), ({"malloc": "tcmalloc"}, "runtime.malloc"), ({"thread": 2}, "unknown runtime")],
)
def test_bad_runtime_settings_name_the_key(settings, message):
    with pytest.raises(ValueError, match=message):
        apply_runtime(settings)


def test_inference_commands_retain_freed_blocks_and_training_does_not(compose_config):
    # Measured choice (docs/benchmarks.md): retain sped up evaluation and inversion back to the
    # removed block cache's speed; in training it cost more peak memory than it bought in speed.
    for command in ("eval", "sample", "invert"):
        assert compose_config(command, ["ckpt_path=x.ckpt"]).runtime.malloc == "retain", command
    assert compose_config("train", []).runtime.malloc == "default"
    assert compose_config("eval", ["ckpt_path=x.ckpt", "runtime.malloc=default"]).runtime.malloc == "default"
