"""Resuming training: what a checkpoint restores, resume=true, and a run killed with SIGKILL."""

import copy
import csv
import math
import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from reliability import TINY, run_script, script, script_env, train_tiny

import iresnet.cli.train as train_cli
from iresnet.cli.compose import compose_config as compose
from iresnet.cli.train import train
from iresnet.training.checkpoint import CheckpointError, read_checkpoint
from iresnet.training.rng import rng_states, set_rng_states


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    torch.save({"rng_states": rng_states()}, tmp_path / "c.ckpt")
    expected = torch.rand(3), np.random.rand(3), random.random()
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)["rng_states"]
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    set_rng_states(loaded)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


class CaptureResumedState(pl.Callback):
    """Records the state a resumed fit starts from (class attribute: the test reads it back)."""

    seen: dict = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        # Before Lightning's first iter(train_dataloader) draws a seed from the restored stream.
        CaptureResumedState.seen = {"torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state()[1].copy()}

    def on_train_start(self, trainer, pl_module) -> None:
        CaptureResumedState.seen.update(
            step=trainer.global_step,
            state_dict={k: v.clone() for k, v in pl_module.state_dict().items()},
            optimizer=copy.deepcopy(trainer.optimizers[0].state_dict()),
        )


def test_resume_restores_optimizer_ema_spectral_norms_and_rng(tmp_path, monkeypatch):
    ckpt_path = train_tiny(tmp_path / "first")
    saved = read_checkpoint(ckpt_path)
    assert saved["global_step"] == 4 and "rng_states" in saved

    monkeypatch.setattr(train_cli, "build_trainer", _with_capture(train_cli.build_trainer))
    cfg = compose("train", [*TINY, "trainer.limit_train_batches=4", "trainer.max_epochs=2", "~logger",
                               f"ckpt_path={ckpt_path}", "test=false"], tmp_path / "second")  # fmt: skip
    train(cfg)
    seen = CaptureResumedState.seen
    assert seen["step"] == 4
    state = seen["state_dict"]
    assert state.keys() == saved["state_dict"].keys()
    # Weights, EMA shadow (ema.module.*, ema.n_averaged) and power-iteration vectors (_u, _v, _sigma).
    assert any(k.startswith("ema.") for k in state) and any(k.endswith("._u") for k in state)
    for key, value in saved["state_dict"].items():
        assert torch.equal(state[key], value), key
    assert int(state["ema.n_averaged"]) == 4
    for got, want in zip(seen["optimizer"]["state"].values(), saved["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(got[k], want[k]) for k in want)
    (states,) = saved["rng_states"]  # one process: one rank's streams
    assert torch.equal(seen["torch_rng"], states["torch"])
    assert np.array_equal(seen["numpy_rng"], states["numpy"]["keys"].numpy())
    assert read_checkpoint(tmp_path / "second" / "checkpoints" / "last.ckpt")["global_step"] == 8


def _with_capture(build_trainer):
    def build(cfg, loggers=None, **overrides):
        trainer = build_trainer(cfg, loggers, **overrides)
        trainer.callbacks.append(CaptureResumedState())
        return trainer

    return build


def test_resume_true_needs_a_run_with_last_ckpt(tmp_path):
    cfg = compose("train", [*TINY, "resume=true"], tmp_path / "empty_run")
    with pytest.raises(CheckpointError, match=r"resume=true found no checkpoints/last.ckpt.*run_dir="):
        train(cfg)
    cfg = compose("train", [*TINY, "resume=true", "ckpt_path=x.ckpt"], tmp_path / "run")
    with pytest.raises(ValueError, match="either resume=true"):
        train(cfg)


def _logged(path, key):
    """``[(step, value)]`` of one metric in a CSV logger's file."""
    with open(path) as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_from_the_last_saved_step(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=30", "trainer.log_every_n_steps=1",
            "callbacks.step_checkpoint.every_n_train_steps=5", "logger.csv.flush_logs_every_n_steps=1",
            f"run_dir={run}"]  # fmt: skip
    proc = subprocess.Popen(
        [script("iresnet-train"), *args, "+callbacks.slow._target_=reliability.SlowSteps"],
        cwd=tmp_path, env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    saved = read_checkpoint(last)
    killed_at = saved["global_step"]
    assert killed_at in (5, 10, 15, 20, 25)
    assert int(saved["state_dict"]["ema.n_averaged"]) == killed_at  # the average of those weights

    resumed = run_script("iresnet-train", *args, "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {killed_at}" in resumed.stdout
    assert read_checkpoint(last)["global_step"] == 30
    # One log: the curve before the kill (cut at the checkpoint's step) continues with the resumed one.
    logged = _logged(run / "csv" / "metrics.csv", "train/bpd")
    assert [step for step, _ in logged] == list(range(30)) and all(math.isfinite(bpd) for _, bpd in logged)
    assert not list((run / "csv").glob("metrics_until_step_*.csv"))
    # The warm-up schedule continues too: lr = 1e-3 * (step + 1) / 50 over the 50 warm-up steps.
    lrs = dict(_logged(run / "csv" / "metrics.csv", "lr-Adam"))
    assert lrs[killed_at] == pytest.approx(1e-3 * (killed_at + 1) / 50)
    assert "test bits/dim" in resumed.stdout
