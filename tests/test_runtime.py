"""The commands are plain programs: the console scripts call each command's ``main``, the
``runtime`` group holds only torch settings, and a command behaves the same however it is started
(console script, ``python -m iresnet.cli.<command>``, Hydra's multirun)."""

import json
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from reliability import script, script_env

import iresnet
from iresnet.runtime import SETTINGS, apply_runtime

COMMANDS = ("train", "eval", "sample", "invert", "bench", "ood", "export")
PACKAGE = Path(iresnet.__file__).resolve().parent
# What the package must never do to the process it runs in (issue 31): start itself afresh, freeze
# or pause the garbage collector, tune or trim the C library's malloc, load C symbols by hand.
PROCESS_TRICKS = ("ctypes", "os.exec", "execve", "gc.freeze", "gc.disable", "malloc_trim", "mallopt")


def test_apply_runtime_sets_threads_and_reports_what_it_did(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr("warnings.filters", list(__import__("warnings").filters))
    try:
        applied = apply_runtime({"threads": 1, "quiet_lightning_notes": True})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert applied == ["torch threads 1", "Lightning's eval-mode and pytree notes muted"]
    assert apply_runtime({}) == [f"torch threads {threads} (torch's default)"]


@pytest.mark.parametrize(
    "settings, message",
    [({"threads": 0}, "runtime.threads"), ({"threads": True}, "runtime.threads"), ({"thread": 2}, "unknown runtime"),
     ({"malloc": "hugepages"}, "unknown runtime"), ({"gc": "freeze"}, "unknown runtime")],
)  # fmt: skip
def test_bad_runtime_settings_name_the_key(settings, message):
    with pytest.raises(ValueError, match=message):
        apply_runtime(settings)


def test_every_commands_runtime_group_holds_only_torch_settings(compose_config):
    for command in COMMANDS:
        assert set(compose_config(command, []).runtime) <= set(SETTINGS), command


def test_console_scripts_call_each_commands_main():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("iresnet-")}
    assert scripts == {f"iresnet-{command}": f"iresnet.cli.{command}:main" for command in COMMANDS}


def test_the_package_plays_no_process_tricks():
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*"))
        if path.is_file() and path.suffix in (".py", ".cpp", ".h", ".yaml")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(trick in line for trick in PROCESS_TRICKS)
    ]  # fmt: skip
    assert found == []


def test_the_package_imports_its_public_names_plainly():
    # Plain imports, so that IDEs and type checkers see them; only ``pretrained`` loads on first
    # use, because it imports Lightning, which ``import iresnet`` does not.
    assert [name for name in iresnet.__all__ if name not in vars(iresnet)] in (["pretrained"], [])
    from iresnet.pretrained_models import pretrained

    assert iresnet.pretrained is pretrained
    check = "import sys, iresnet; print('pytorch_lightning' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["False"], done.stderr[-2000:]


# --- One behaviour under every launcher -------------------------------------------------------

TOY = ["experiment=toy2d", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
       "trainer.limit_test_batches=1", "callbacks.sample_grid.n=16", "~callbacks.progress_bar"]  # fmt: skip


def _launch(how: str, command: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    """``iresnet-<command> args`` started ``how``; its output directory is ``out``."""
    cwd = out.parent
    if how == "multirun":  # one job (sweeping a single value) in the sweep folder's 0/
        args, out = ("-m", *args, f"hydra.sweep.dir={out}"), out / "0"
    elif command == "train":
        args = (*args, f"run_dir={out}")
    else:
        args = (*args, f"hydra.run.dir={out}")
    starts = {"script": [script(f"iresnet-{command}")], "module": [sys.executable, "-m", f"iresnet.cli.{command}"]}
    done = subprocess.run([*starts.get(how, starts["script"]), *args], env=script_env(), capture_output=True,
                          text=True, timeout=600, cwd=cwd)  # fmt: skip
    assert done.returncode == 0, (how, command, done.stderr[-3000:])
    done.out = out
    return done


def _printed(done: subprocess.CompletedProcess) -> list[str]:
    """The command's own lines (Hydra's multirun adds a line naming the job)."""
    lines = [line for line in done.stdout.splitlines() if line.startswith(("runtime:", "test ", "val "))]
    return [re.sub(r", [0-9.]+ s\)$", ")", line) for line in lines]  # without the time it took


@pytest.mark.slow
def test_train_and_eval_behave_the_same_under_every_launcher(tmp_path):
    runs = {how: _launch(how, "train", tmp_path / f"train_{how}", *TOY, "seed=1") for how in ("script", "module", "multirun")}
    metrics = {how: json.loads((done.out / "metrics.json").read_text()) for how, done in runs.items()}
    assert metrics["script"] == metrics["module"] == metrics["multirun"]  # same numbers, to the last bit
    for how, done in runs.items():
        assert (done.out / "train.log").is_file(), how  # the job is named after the command, not its module
        assert _printed(done) == _printed(runs["script"]), how
        assert any(line.startswith("runtime: torch threads") for line in _printed(done)), how

    ckpt = runs["script"].out / "checkpoints" / "last.ckpt"
    evals = {how: _launch(how, "eval", tmp_path / f"eval_{how}", f"ckpt_path={ckpt}", "split=val", "batch_size=64")
             for how in ("script", "module", "multirun")}  # fmt: skip
    results = {how: json.loads((done.out / "eval.json").read_text()) for how, done in evals.items()}
    for result in results.values():
        result.pop("seconds")  # how long it took
    assert results["script"] == results["module"] == results["multirun"]
    for how, done in evals.items():
        assert (done.out / "eval.log").is_file(), how
        assert _printed(done) == _printed(evals["script"]), how


# --- A command's name is its own (issue 32, item 6) ---------------------------------------------


@pytest.mark.parametrize("how", ["script", "module"])
def test_help_names_the_command(how):
    start = [script("iresnet-eval")] if how == "script" else [sys.executable, "-m", "iresnet.cli.eval"]
    done = subprocess.run([*start, "--help"], env=script_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("iresnet-eval is powered by Hydra."), done.stdout[:200]


def test_each_command_names_its_hydra_job(monkeypatch, tmp_path):
    """The job behind ``iresnet-<command>`` is ``<command>``: its log is ``<command>.log`` and
    ``--help`` names ``iresnet-<command>``, whatever module the task function lives in."""
    from hydra.core.hydra_config import HydraConfig

    from iresnet.cli.common import hydra_command

    for command in COMMANDS:
        seen = {}

        def task(cfg, seen=seen):
            seen.update(name=HydraConfig.get().job.name, app=HydraConfig.get().help.app_name)

        monkeypatch.setattr(sys, "argv", [f"iresnet-{command}", f"hydra.run.dir={tmp_path / command}"])
        hydra_command(task, command)()
        assert seen == {"name": command, "app": f"iresnet-{command}"}
        assert (tmp_path / command / f"{command}.log").is_file()
