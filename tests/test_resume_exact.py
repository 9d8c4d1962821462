"""Killed at any moment and resumed, a run finishes as if it had never stopped: the same final
test bits/dim to the last bit (CPU), one continuous CSV log, no leftovers; data parallel too."""

import csv
import json
import subprocess
from pathlib import Path

import pytest
from reliability import TINY, run_script, script, script_env

# Two epochs of six steps, a checkpoint every two steps, validation and test on one batch each.
ARGS = [*TINY, "trainer.max_epochs=2", "trainer.limit_train_batches=6", "callbacks.step_checkpoint.every_n_train_steps=2",
        "trainer.log_every_n_steps=1", "logger.csv.flush_logs_every_n_steps=1", "~callbacks.progress_bar"]  # fmt: skip
KILL = "+callbacks.kill._target_=reliability.KillAt"
# (where the first attempt dies, its extra overrides)
KILL_POINTS = {
    "step 3, before the first validation": [KILL, "+callbacks.kill.step=3"],
    "step 9, in the second epoch": [KILL, "+callbacks.kill.step=9"],
    "during the first validation": [KILL, "+callbacks.kill.stage=validate", "+callbacks.kill.step=6"],
    "during the test": [KILL, "+callbacks.kill.stage=test"],
    "writing the third checkpoint": ["trainer.plugins=[{_target_: reliability.KillDuringWrite, n: 3}]"],
}


def _run(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    # A session of its own: a data-parallel run is killed as a whole, as its process group.
    return subprocess.run([script("iresnet-train"), *ARGS, f"run_dir={run_dir}", *extra], cwd=run_dir.parent,
                          env=script_env(), capture_output=True, text=True, timeout=600,
                          start_new_session=True)  # fmt: skip


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _logged_steps(run_dir: Path, key: str) -> list[int]:
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get(key)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    done = _run(run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("where", KILL_POINTS)
def test_a_killed_and_resumed_run_ends_exactly_as_an_uninterrupted_one(where, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    killed = _run(run_dir, *KILL_POINTS[where])
    assert killed.returncode == -9, (where, killed.stderr[-2000:])  # SIGKILL
    resumed = _run(run_dir, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step" in resumed.stdout
    assert "not resumable" not in resumed.stderr  # Lightning's warning about the data order
    assert _metrics(run_dir)["test/bpd"] == _metrics(uninterrupted)["test/bpd"]  # to the last bit
    # One continuous log: every training step once, as in the uninterrupted run.
    assert _logged_steps(run_dir, "train/bpd") == _logged_steps(uninterrupted, "train/bpd") == list(range(12))
    assert _logged_steps(run_dir, "val/bpd") == _logged_steps(uninterrupted, "val/bpd")
    assert not list((run_dir / "csv").glob("metrics_until_step_*.csv"))
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # a killed write's temporary file is gone


@pytest.mark.slow
def test_a_killed_data_parallel_run_resumes_and_finishes(tmp_path):
    run_dir = tmp_path / "run"
    ddp = ["trainer=ddp_cpu", "trainer.limit_train_batches=6", "data.batch_size=16"]
    killed = _run(run_dir, *ddp, KILL, "+callbacks.kill.step=3", "+callbacks.kill.group=true")
    assert killed.returncode != 0
    ckpt = json.dumps(sorted(p.name for p in (run_dir / "checkpoints").iterdir()))
    resumed = _run(run_dir, *ddp, "resume=true")
    assert resumed.returncode == 0, (ckpt, resumed.stderr[-3000:])
    assert "resuming from step 2" in resumed.stdout and _metrics(run_dir)["test/bpd"] < 20
