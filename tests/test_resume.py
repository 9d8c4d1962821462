"""Resuming training: what a checkpoint restores, resume=true, and a run killed with SIGKILL."""

import copy
import csv
import json
import math
import os
import random
import signal
import subprocess
import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
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


class _FitReached(Exception):
    pass


@pytest.mark.parametrize("rank", [0, 1])
def test_only_global_rank_zero_sets_the_log_aside_and_removes_stale_files_under_slurm(rank, tmp_path, monkeypatch):
    """Under ``srun`` every task runs ``iresnet-train``; rank zero (from SLURM_PROCID, read by
    Lightning's cluster environment) alone touches the run directory, so the tasks do not race."""
    run = tmp_path / "run"
    train_tiny(run)
    log = run / "csv" / "metrics.csv"
    log.parent.mkdir()
    log.write_text("step,train/bpd\n0,5.0\n3,4.0\n")
    stale = run / "checkpoints" / ".last.ckpt.999999999.tmp"  # a killed writer's (no such process)
    stale.write_bytes(b"")
    for name, value in {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": str(rank),
                        "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0", "SLURM_JOB_NAME": "iresnet",
                        "SLURM_NODELIST": "localhost", "SLURM_JOB_ID": "1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    # The trainer sets the process's rank for Lightning's rank_zero_only; restored after the test.
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    monkeypatch.setattr(pl.Trainer, "fit", lambda *args, **kwargs: (_ for _ in ()).throw(_FitReached()))
    cfg = compose("train", [*TINY, "trainer=ddp_cpu", "trainer.devices=2", "resume=true"], run)
    with pytest.raises(_FitReached):
        train(cfg)
    if rank == 0:
        assert not log.exists() and (run / "csv" / "metrics_until_step_4.csv").is_file() and not stale.exists()
    else:
        assert log.read_text() == "step,train/bpd\n0,5.0\n3,4.0\n" and stale.exists()


# --- The CSV log never fails, whatever order keys first come in (issue 32, item 8) --------------

ROW_KEYS = ["lr-Adam", "train/bpd", "val/bpd", "val/bounds_below_one", "test_images/recognizability"]


def _rows_of(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def test_lightnings_csv_writer_fails_on_a_log_it_did_not_write_and_ours_does_not(tmp_path):
    """The failure of a resumed run: the file holds columns (an earlier process's) that the
    writer does not know, and a new key makes Lightning rewrite the header without them."""
    from pytorch_lightning.loggers import CSVLogger

    from iresnet.training.csv_log import ResumableCSVLogger

    for logger_class, fails in ((CSVLogger, True), (ResumableCSVLogger, False)):
        logger = logger_class(tmp_path, name=logger_class.__name__, version="", flush_logs_every_n_steps=1)
        logger.log_metrics({"lr-Adam": 1e-3}, step=0)  # creates the file: lr-Adam, step
        path = tmp_path / logger_class.__name__ / "metrics.csv"
        path.write_text("lr-Adam,step,val/bounds_below_one\n0.001,0,1.0\n")  # another writer's rows
        try:
            logger.log_metrics({"val/bpd": 3.0}, step=1)
        except ValueError as err:
            assert fails and "dict contains fields not in fieldnames" in str(err)
            continue
        assert not fails
        assert _rows_of(path) == [{"lr-Adam": "0.001", "step": "0", "val/bounds_below_one": "1.0"},
                                  {"step": "1", "val/bpd": "3.0"}]  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    on_disk=st.lists(st.sampled_from(ROW_KEYS), unique=True),
    rows=st.lists(st.lists(st.sampled_from(ROW_KEYS), unique=True), min_size=1, max_size=8),
    flush_every=st.integers(1, 3),
)
def test_the_csv_log_keeps_every_row_whatever_keys_come_first(on_disk, rows, flush_every, tmp_path_factory):
    from iresnet.training.csv_log import ResumableCSVLogger

    root = tmp_path_factory.mktemp("csv")
    logger = ResumableCSVLogger(root, name="csv", version="", flush_logs_every_n_steps=flush_every)
    logger.experiment  # the writer starts (and removes a stale metrics.csv, as Lightning's does)
    path = root / "csv" / "metrics.csv"
    before = [{**{key: "1.5" for key in on_disk}, "step": "0"}] if on_disk else []
    if on_disk:  # a log written by another process, as joined back after a resume
        path.write_text(",".join([*on_disk, "step"]) + "\n" + ",".join(["1.5"] * len(on_disk) + ["0"]) + "\n")
    for step, keys in enumerate(rows, 1):
        logger.log_metrics({key: float(step) for key in keys}, step=step)
    logger.save()
    logged = [{**{key: f"{float(step)}" for key in keys}, "step": str(step)} for step, keys in enumerate(rows, 1)]
    assert _rows_of(path) == before + logged


# Two epochs of six steps, a checkpoint every two steps; the log flushed every three steps, so
# that a resumed run's first rows hold some keys and later rows bring the others.
KILLABLE = [*TINY, "trainer.max_epochs=2", "trainer.limit_train_batches=6", "callbacks.step_checkpoint.every_n_train_steps=2",
            "trainer.log_every_n_steps=1", "logger.csv.flush_logs_every_n_steps=3", "~callbacks.progress_bar", "seed=3"]  # fmt: skip
_UNINTERRUPTED: dict[int, float] = {}


def _train_in(run_dir, val_batches: int, *extra: str) -> subprocess.CompletedProcess:
    args = [*KILLABLE, f"trainer.limit_val_batches={val_batches}", f"run_dir={run_dir}", *extra]
    return run_script("iresnet-train", *args, cwd=run_dir.parent, timeout=600)


def _test_bpd(run_dir) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["test/bpd"]


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kill_step=st.integers(3, 11), val_batches=st.sampled_from([0, 1]))
# Killed right after an epoch's end: the run resumes from the checkpoint of the epoch's last step.
@example(kill_step=7, val_batches=1)
@example(kill_step=7, val_batches=0)
def test_a_run_killed_at_any_step_resumes_to_the_uninterrupted_test_score(kill_step, val_batches, tmp_path_factory):
    """Killed (SIGKILL) after any optimizer step past the first checkpoint, with or without
    validation, ``resume=true`` finishes with no error and the uninterrupted run's test bits/dim."""
    if val_batches not in _UNINTERRUPTED:
        whole = tmp_path_factory.mktemp("whole") / "run"
        done = _train_in(whole, val_batches)
        assert done.returncode == 0, done.stderr[-3000:]
        _UNINTERRUPTED[val_batches] = _test_bpd(whole)
    run = tmp_path_factory.mktemp("killed") / "run"
    killed = _train_in(run, val_batches, "+callbacks.kill._target_=reliability.KillAt", f"+callbacks.kill.step={kill_step}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = _train_in(run, val_batches, "resume=true")
    assert resumed.returncode == 0, (kill_step, val_batches, resumed.stderr[-3000:])
    assert _test_bpd(run) == _UNINTERRUPTED[val_batches], (kill_step, val_batches)
    assert not list((run / "csv").glob("metrics_until_step_*.csv"))  # one log again
    assert [int(row["step"]) for row in _rows_of(run / "csv" / "metrics.csv") if "train/bpd" in row] == list(range(12))


class _Recorder(pl.LightningModule):
    """Records the batches it trains on; its loader is made as the datamodules make theirs."""

    def __init__(self, seen: list, val_batches: int) -> None:
        super().__init__()
        self.seen, self.val_batches, self.layer = seen, val_batches, torch.nn.Linear(1, 1)

    def training_step(self, batch, index):
        self.seen.append((self.current_epoch, batch[0][:, 0].tolist()))
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, index):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        from torch.utils.data import TensorDataset

        from iresnet.data.loader import ResumableDataLoader, next_training_epoch

        data = TensorDataset(torch.arange(40.0).view(-1, 1))
        return ResumableDataLoader(data, batch_size=4, shuffle=True, drop_last=True, seed=0, epoch_batches=3,
                                   first_epoch=next_training_epoch(self.trainer))  # fmt: skip

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), batch_size=4)


@pytest.mark.parametrize("val_batches", [0, 1])
def test_a_run_resumed_at_an_epochs_end_trains_on_the_next_epochs_batches(val_batches, tmp_path):
    """Lightning hands a loader its saved state only mid-epoch; resumed from an epoch's last
    checkpoint (after its validation, or with none), the loader still starts the next epoch."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def fit(epochs, seen, ckpt_path=None):
        trainer = pl.Trainer(max_epochs=epochs, limit_train_batches=3, limit_val_batches=val_batches, logger=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[ModelCheckpoint(dirpath=tmp_path / str(epochs), save_last=True, save_top_k=0)])  # fmt: skip
        trainer.fit(_Recorder(seen, val_batches), ckpt_path=ckpt_path)

    whole, first, resumed = [], [], []
    fit(3, whole)
    fit(1, first)
    fit(3, resumed, ckpt_path=tmp_path / "1" / "last.ckpt")
    assert first == whole[:3] and resumed == whole[3:]
