"""Process settings: applied by the commands' runtime group, never by importing iresnet."""

import contextlib
import gc
import json
import os
import re
import subprocess
import sys

import pytest

from iresnet import runtime
from iresnet.cli import launch
from iresnet.runtime import (
    HUGEPAGES_TUNABLE, HUGEPAGES_TUNABLES, apply_runtime, frozen_imports, hugepages_environment,
    hugepages_unavailable, release_freed_memory,
)  # fmt: skip
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


def _without_tunables() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}


def _faults(mode: str, **env: str) -> tuple[str, int]:
    """The malloc line ``apply_runtime`` reports in a fresh process, and that process's page
    faults over ten steps of large feature maps."""
    environ = _without_tunables()
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
    # Reused blocks need none once the heap has its working size (rarely it grows once or twice
    # more: 10,000 faults each).
    assert faults < default_faults / 5


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
    [
        ({"threads": 0}, "runtime.threads"), ({"malloc": "tcmalloc"}, "runtime.malloc"), ({"gc": "off"}, "runtime.gc"),
        ({"thread": 2}, "unknown runtime"),
    ],  # fmt: skip
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
    applied, faults = _faults("hugepages", GLIBC_TUNABLES=HUGEPAGES_TUNABLES)  # the command's setting
    assert applied == f"glibc malloc on transparent huge pages, freed blocks up to 32 MiB kept (GLIBC_TUNABLES={HUGEPAGES_TUNABLES})"
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
    assert hugepages_environment({"PATH": "/bin"}) == {"PATH": "/bin", "GLIBC_TUNABLES": HUGEPAGES_TUNABLES}
    assert hugepages_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) is None  # the user's win
    monkeypatch.setattr(runtime, "hugepages_unavailable", lambda: "huge pages are 'never'")
    assert hugepages_environment({"PATH": "/bin"}) is None


_TRIM = """
import json
from iresnet.runtime import release_freed_memory
def rss_mib():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024
blocks = [bytearray(100_000) for _ in range(2_000)]  # 200 MB in glibc's heap (below its mmap threshold)
for block in blocks:
    block[::4096] = b"x" * len(block[::4096])  # resident
del blocks[:-1]  # freed into the heap; the last block keeps its top from shrinking by itself
before = rss_mib()
released = release_freed_memory()
print(json.dumps({"before": before, "after": rss_mib(), "released": released}))
"""


@glibc
def test_release_freed_memory_returns_the_heaps_free_pages():
    done = subprocess.run([sys.executable, "-c", _TRIM], capture_output=True, text=True, check=True, env=_without_tunables())
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["released"] and result["before"] - result["after"] > 150  # of the 200 MB freed


def test_release_freed_memory_leaves_a_preloaded_allocator_alone(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert release_freed_memory() is False


def test_commands_release_freed_memory_after_their_task(monkeypatch, tmp_path):
    from iresnet.cli import common

    calls = []
    monkeypatch.setattr(common, "release_freed_memory", lambda: calls.append("released"))
    monkeypatch.setattr(sys, "argv", ["iresnet-train", "experiment=toy2d", f"hydra.run.dir={tmp_path}"])
    common.hydra_command(lambda cfg: calls.append("task"), "train")()
    assert calls == ["task", "released"]


_FROZEN_IMPORTS = """
import gc, json, time
from iresnet.runtime import apply_runtime, frozen_imports
full = []
gc.callbacks.append(lambda phase, info: full.append(phase) if phase == "start" and info["generation"] == 2 else None)
gc.set_threshold(10, 1, 1)  # full collections as often as CPython allows
with frozen_imports():
    full.clear()
    import torch  # about 200,000 tracked objects, most of them alive until exit
during = len(full)
start = time.perf_counter()
gc.collect()
print(json.dumps({
    "collections_during": during, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count(),
    "tracked": len(gc.get_objects()), "report": apply_runtime({"gc": "freeze"})[2],
}))
"""


def test_frozen_imports_pause_collection_then_freeze_the_imported_objects():
    done = subprocess.run([sys.executable, "-c", _FROZEN_IMPORTS], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["collections_during"] == 0 and result["enabled"]  # paused during the block only
    # torch's objects sit in the permanent generation, which collections skip.
    assert result["frozen"] > 100_000 and result["tracked"] < result["frozen"] / 10
    assert result["report"] == f"garbage collector skips the {result['frozen']:,} objects of the imports (gc.freeze)"


def test_frozen_imports_leave_a_disabled_collector_disabled(monkeypatch):
    calls = []
    for name in ("disable", "enable", "freeze"):
        monkeypatch.setattr(gc, name, lambda name=name: calls.append(name))
    monkeypatch.setattr(gc, "isenabled", lambda: False)
    with pytest.raises(RuntimeError), frozen_imports():
        raise RuntimeError("an import failed")
    assert calls == ["disable", "freeze"]
    # Without the launcher nothing was frozen, and the runtime line says so.
    monkeypatch.setattr(gc, "get_freeze_count", lambda: 0)
    assert "gc: freeze applies when an iresnet-* command imports" in apply_runtime({"gc": "freeze"})[2]
    assert len(apply_runtime({"gc": "default"})) == 2  # threads and malloc only


class _Restarted(Exception):
    pass


@pytest.mark.parametrize(
    "overrides, environ, restarts, frozen",
    [
        ([], {}, True, None),  # training's default, the process started without the tunable
        ([], {"GLIBC_TUNABLES": HUGEPAGES_TUNABLES}, False, True),  # the restarted process runs the command
        (["runtime.malloc=default"], {}, False, True),
        (["runtime.malloc=default", "runtime.gc=default"], {}, False, False),
        (["--cfg", "job"], {}, False, False),  # Hydra's flags are Hydra's
    ],
)
def test_launcher_restarts_once_with_the_tunable_then_runs_the_command(monkeypatch, overrides, environ, restarts, frozen):
    calls, blocks = [], []

    def execve(path, argv, env):
        calls.append((path, argv, env))
        raise _Restarted

    monkeypatch.setattr(runtime, "hugepages_unavailable", lambda: None)
    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(os, "environ", {"PATH": os.environ.get("PATH", ""), **environ})
    monkeypatch.setattr(sys, "argv", ["iresnet-train", *overrides])
    monkeypatch.setattr("iresnet.cli.train.main", lambda: "ran")

    @contextlib.contextmanager
    def recorded_frozen_imports():
        blocks.append("entered")
        yield

    monkeypatch.setattr(launch, "frozen_imports", recorded_frozen_imports)
    if restarts:
        with pytest.raises(_Restarted):
            launch.train()
        [(path, argv, env)] = calls
        assert path == sys.executable and argv == sys.orig_argv and env["GLIBC_TUNABLES"] == HUGEPAGES_TUNABLES
        assert blocks == []  # nothing is imported before the restart
    else:
        assert launch.train() == "ran" and calls == []
        assert blocks == (["entered"] if frozen else [])


def test_a_command_line_is_composed_once_per_process(monkeypatch):
    # The launcher checks the overrides, then the command's main checks them again: one compose.
    launch._composed.cache_clear()
    composed = []
    real_compose = launch.compose
    monkeypatch.setattr(launch, "compose", lambda *args, **kwargs: composed.append(args) or real_compose(*args, **kwargs))
    first = launch.check_overrides("train", ["seed=7"])
    assert launch.check_overrides("train", ["seed=7"]) is first and first.seed == 7 and len(composed) == 1
    assert launch.check_overrides("train", ["seed=8"]).seed == 8 and len(composed) == 2
    with pytest.raises(SystemExit):  # a bad command line is refused each time, not remembered
        launch.check_overrides("train", ["no_such_key=1"])
    with pytest.raises(SystemExit):
        launch.check_overrides("train", ["no_such_key=1"])
    assert len(composed) == 4


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
    assert re.search(r"garbage collector skips the [\d,]+ objects of the imports \(gc.freeze\)", line)
