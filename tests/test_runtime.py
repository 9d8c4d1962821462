"""Process settings: applied by the commands' runtime group, never by importing iresnet."""

import os
import subprocess
import sys

import pytest

from iresnet import runtime
from iresnet.cli import launch
from iresnet.runtime import HUGEPAGES_TUNABLE, apply_runtime, hugepages_environment, hugepages_unavailable
from reliability import script

_FAULTS = """
import resource, sys, torch
from iresnet.runtime import apply_runtime
if sys.argv[1] == "import":
    import iresnet.cli.train, iresnet.cli.bench  # the command modules, without running a command
applied = apply_runtime({"malloc": sys.argv[1]}) if sys.argv[1] in ("retain", "default", "hugepages") else ["", ""]
def step():  # feature maps alive together, then all freed, as in a training step
    maps = [torch.empty(10_000_000).fill_(1) for _ in range(2)]
for _ in range(8):  # the heap grows to its working size (up to 6 steps in a process that imported little)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied[1])
"""


def _faults(mode: str, **env: str) -> tuple[str, int]:
    """The malloc line ``apply_runtime`` reports in a fresh process, and that process's page
    faults over ten steps of large feature maps."""
    environ = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True, env={**environ, **env}
    )
    faults, malloc = done.stdout.splitlines()
    return malloc, int(faults)


glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


@pytest.fixture(scope="module")
def default_faults() -> int:
    applied, faults = _faults("default")
    # glibc maps blocks over 32 MiB afresh whatever it has seen (smaller ones depend on its
    # history): 10 steps x 2 x 40 MB are ~195,000 page faults.
    assert "environment" in applied and faults > 100_000
    return faults


@glibc
def test_retain_reuses_freed_blocks_instead_of_faulting_them_in(default_faults):
    applied, faults = _faults("retain")
    assert "keeps freed blocks" in applied
    # Reused blocks need none once the heap has its working size (rarely it grows once more).
    assert faults < default_faults / 10


@glibc
def test_users_malloc_tunables_and_preloaded_allocators_win(default_faults):
    applied, faults = _faults("retain", MALLOC_MMAP_THRESHOLD_="131072")
    assert "environment" in applied and faults > default_faults / 2
    applied, _ = _faults("retain", LD_PRELOAD="")  # an empty preload is none
    assert "keeps freed blocks" in applied


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


def test_inference_commands_retain_freed_blocks_and_training_uses_huge_pages(compose_config):
    # Measured choice (docs/benchmarks.md): retain sped up evaluation and inversion back to the
    # removed block cache's speed; in training it cost more peak memory than it bought in speed.
    for command in ("eval", "sample", "invert"):
        assert compose_config(command, ["ckpt_path=x.ckpt"]).runtime.malloc == "retain", command
    assert compose_config("train", []).runtime.malloc == "hugepages"
    assert compose_config("eval", ["ckpt_path=x.ckpt", "runtime.malloc=default"]).runtime.malloc == "default"


hugepages = pytest.mark.skipif(hugepages_unavailable() is not None, reason=f"no huge pages: {hugepages_unavailable()}")


@hugepages
def test_hugepages_tunable_puts_fresh_blocks_on_huge_pages(default_faults):
    applied, faults = _faults("hugepages", GLIBC_TUNABLES=HUGEPAGES_TUNABLE)
    assert applied == f"glibc malloc on transparent huge pages (GLIBC_TUNABLES={HUGEPAGES_TUNABLE})"
    # 2 MiB pages instead of 4 KiB ones: each 40 MB block takes about 20 faults, not 10,000.
    assert faults < default_faults / 10
    applied, _ = _faults("hugepages")  # asked for, but the process did not start with the tunable
    assert "no huge pages: glibc reads the tunable only at start" in applied


def test_hugepages_unavailable_says_why(tmp_path, monkeypatch):
    thp = tmp_path / "enabled"
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.36")
    thp.write_text("always [madvise] never\n")
    assert hugepages_unavailable(thp) is None
    thp.write_text("[always] madvise never\n")
    assert "'always', not 'madvise'" in hugepages_unavailable(thp)
    assert "no transparent huge pages" in hugepages_unavailable(tmp_path / "missing")
    monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.31")
    assert "glibc 2.31 has no hugetlb tunable" in hugepages_unavailable(thp)

    def not_glibc(name):
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(os, "confstr", not_glibc)
    assert hugepages_unavailable(thp) == "the C library is not glibc"
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert hugepages_unavailable(thp) == "jemalloc is preloaded"


def test_hugepages_environment_adds_the_tunable_unless_the_user_set_tunables(monkeypatch):
    monkeypatch.setattr(runtime, "hugepages_unavailable", lambda: None)
    assert hugepages_environment({"PATH": "/bin"}) == {"PATH": "/bin", "GLIBC_TUNABLES": HUGEPAGES_TUNABLE}
    assert hugepages_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) is None  # the user's win
    monkeypatch.setattr(runtime, "hugepages_unavailable", lambda: "huge pages are 'never'")
    assert hugepages_environment({"PATH": "/bin"}) is None


class _Restarted(Exception):
    pass


@pytest.mark.parametrize(
    "overrides, environ, restarts",
    [
        ([], {}, True),  # training's default, the process started without the tunable
        ([], {"GLIBC_TUNABLES": HUGEPAGES_TUNABLE}, False),  # the restarted process runs the command
        (["runtime.malloc=default"], {}, False),
        (["--cfg", "job"], {}, False),  # Hydra's flags are Hydra's
    ],
)
def test_launcher_restarts_once_with_the_tunable_then_runs_the_command(monkeypatch, overrides, environ, restarts):
    calls = []

    def execve(path, argv, env):
        calls.append((path, argv, env))
        raise _Restarted

    monkeypatch.setattr(runtime, "hugepages_unavailable", lambda: None)
    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(os, "environ", {"PATH": os.environ.get("PATH", ""), **environ})
    monkeypatch.setattr(sys, "argv", ["iresnet-train", *overrides])
    monkeypatch.setattr("iresnet.cli.train.main", lambda: "ran")
    if restarts:
        with pytest.raises(_Restarted):
            launch.train()
        [(path, argv, env)] = calls
        assert path == sys.executable and argv == sys.orig_argv and env["GLIBC_TUNABLES"] == HUGEPAGES_TUNABLE
    else:
        assert launch.train() == "ran" and calls == []


def test_installed_command_reports_how_malloc_runs(tmp_path):
    environ = {key: value for key, value in os.environ.items() if key not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    done = subprocess.run(
        [script("iresnet-train"), "experiment=toy2d", "+trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("runtime:")]  # printed once
    reason = hugepages_unavailable()
    expected = "glibc malloc on transparent huge pages" if reason is None else f"no huge pages: {reason}"
    assert expected in line
