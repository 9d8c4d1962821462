"""retain_freed_memory: freed feature maps are reused instead of faulted in again."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

_FAULTS = """
import resource, sys, torch
from iresnet.runtime import retain_freed_memory
if sys.argv[1] == "cli":
    import iresnet.cli.common  # every entry point imports it
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
def step():  # feature maps alive together, then all freed, as in a training step
    maps = [torch.empty(10_000_000).fill_(1) for _ in range(2)]
for _ in range(3):  # the heap grows to its working size
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    applied, faults = done.stdout.split()
    return applied, int(faults)


@pytest.fixture(scope="module")
def default_faults() -> int:
    _, faults = _faults("default")
    # glibc maps blocks over 32 MiB afresh whatever it has seen (smaller ones depend on its
    # history): 10 steps x 2 x 40 MB are ~195,000 page faults.
    assert faults > 100_000
    return faults


def test_freed_blocks_are_reused_instead_of_faulted_in(default_faults):
    applied, faults = _faults("retain")
    assert applied == "True"
    # Reused blocks need none once the heap has its working size (rarely it grows once more).
    assert faults < default_faults / 10


def test_users_malloc_tunables_win(default_faults):
    applied, faults = _faults("retain", MALLOC_MMAP_THRESHOLD_="131072")
    assert applied == "False"
    assert faults > default_faults / 2


def test_command_line_tools_retain_freed_memory(default_faults):
    _, faults = _faults("cli")
    assert faults < default_faults / 10
