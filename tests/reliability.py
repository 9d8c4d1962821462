"""Helpers of the reliability tests: a tiny trained checkpoint, the console scripts, probe callbacks.

The callbacks are loaded by training subprocesses through ``+callbacks.<name>._target_=...``
with this folder on ``PYTHONPATH`` (see :func:`script_env`).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.global_hydra import GlobalHydra

from iresnet.cli.compose import compose_config
from iresnet.lipschitz import spectral_norm_modules
from iresnet.training import AtomicCheckpointIO

TESTS = Path(__file__).resolve().parent
# A two-scale Residual Flow small enough to train a few steps in about a second.
TINY = ["model.n_blocks=[1,1]", "model.hidden_channels=8", "model.fc_blocks=1", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "data.eval_batch_size=32", "callbacks.sample_score.n=8",
        "callbacks.sample_score.classifier_steps=20"]  # fmt: skip


def train_tiny(output_dir: Path) -> Path:
    """Trains the tiny model for 4 steps into ``output_dir``; returns its ``last.ckpt``. Tests that
    only read a checkpoint use the session's ``tiny_ckpt`` fixture (conftest.py) instead."""
    from iresnet.cli.train import train

    overrides = [*TINY, "trainer.limit_train_batches=4", "trainer.max_epochs=1", "~logger"]
    train(compose_config("train", overrides, output_dir=output_dir))
    return output_dir / "checkpoints" / "last.ckpt"


def call_main(command: str, *args: str) -> tuple[int, str]:
    """Runs ``iresnet-<command> args`` in this process (as its console script would, without the
    start-up time of a new interpreter); returns the exit code and what it wrote to stderr."""
    main = importlib.import_module(f"iresnet.cli.{command}").main
    argv, sys.argv = sys.argv, [f"iresnet-{command}", *args]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return code, stderr.getvalue()


def assert_user_error(code: int, stderr: str, *words: str) -> None:
    """Exit code 2 and one ``error: ...`` line naming ``words``, no traceback."""
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    line = next((line for line in stderr.splitlines() if line.startswith("error: ")), None)
    assert line is not None, stderr[-3000:]
    for word in words:
        assert word in line, line


def script_env() -> dict[str, str]:
    """The environment of a console-script subprocess: one thread, and these helpers importable."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def run_script(name: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([script(name), *args], cwd=cwd, env=script_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


class SlowSteps(pl.Callback):
    """Sleeps after each training step, so a test can kill the run while it trains."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


class SpectralNormProbe(pl.Callback):
    """Makes the power-iteration buffers of ranks > 0 drift at the end of training (as separate
    power iterations can), then saves every rank's full state (weights, EMA, ActNorm and
    spectral-norm buffers) to ``<path>/rank<r>.pt``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank > 0:
            for _, _, sn in spectral_norm_modules(pl_module):
                for b in sn.buffers():
                    b.add_(0.5)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.state_dict(), self.path / f"rank{trainer.global_rank}.pt")


class KillAt(pl.Callback):
    """SIGKILLs its own process (no clean-up, as a scheduler or the OOM killer would): after the
    optimizer step ``step`` (``stage="train"``), in the first validation batch after that step
    (``"validate"``), or in the first test batch (``"test"``). Rank ``rank`` dies, or with
    ``group`` every process of its process group (as a scheduler ends a data-parallel job)."""

    def __init__(self, stage: str = "train", step: int = 0, rank: int = 0, group: bool = False) -> None:
        self.stage, self.step, self.rank, self.group = stage, step, rank, group

    def _kill(self, trainer: pl.Trainer, stage: str) -> None:
        if stage == self.stage and trainer.global_rank == self.rank and trainer.global_step >= self.step:
            if self.group:
                os.killpg(os.getpgid(0), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, trainer, *args) -> None:
        self._kill(trainer, "train")

    def on_validation_batch_end(self, trainer, *args) -> None:
        self._kill(trainer, "validate")

    def on_test_batch_end(self, trainer, *args) -> None:
        self._kill(trainer, "test")


class KillDuringWrite(AtomicCheckpointIO):
    """Writes the ``n``-th checkpoint's temporary file, then SIGKILLs the process before the rename."""

    def __init__(self, n: int = 1) -> None:
        super().__init__()
        self.n, self.written = n, 0

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        self.written += 1
        if self.written < self.n:
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        with open(path.with_name(f".{path.name}.{os.getpid()}.tmp"), "wb") as f:
            torch.save(checkpoint, f)
        os.kill(os.getpid(), signal.SIGKILL)
