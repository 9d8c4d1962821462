"""Running ``iresnet-train`` on the protocol in a fresh process, timed by :class:`StepTimer`.

A fresh process per run keeps each run's peak memory its own and measures the command users run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

EXPERIMENT = "mnist5k_bench"
TRAIN_COMMAND = (sys.executable, "-m", "iresnet.cli.train")
# A timing run has no loggers or callbacks (checkpoints, checks, grids, progress bar).
TIMING_ONLY = (
    "~logger", "~callbacks", "+trainer.enable_checkpointing=false", "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
)  # fmt: skip
# The protocol's own callbacks.model_checkpoint setting is left over when the group goes.
PROTOCOL_LEFTOVERS = ("~callbacks.model_checkpoint",)


class BenchmarkError(RuntimeError):
    """A benchmark run failed; the message holds the end of its output."""


def series_overrides(n_terms: int) -> list[str]:
    """Overrides that train with the ``n_terms`` power series, backpropagated through (i-ResNet's
    estimator), instead of the protocol's roulette."""
    return [
        "model/logdet=series", f"model.logdet.n_terms={n_terms}", "model.logdet.grad=backprop",
        "model.logdet.memory_efficient=false",
    ]  # fmt: skip


def _quoted(path: Path) -> str:
    """``path`` as a quoted Hydra override value (paths may hold characters Hydra parses)."""
    return "'" + str(path).replace("'", "\\'") + "'"


def train_command(
    overrides: Sequence[str], run_dir: Path, full: bool = False, experiment: str = EXPERIMENT
) -> list[str]:
    """The ``iresnet-train`` command for ``experiment`` (the protocol) with ``overrides``, timed into ``run_dir``.

    ``full=False`` times training only: no test split, loggers or callbacks (another experiment
    must set no callbacks of its own). ``full=True`` is the command as users run it: it also
    tests and writes its run directory.
    """
    timer = run_dir / "step_timer.json"
    timing = (*TIMING_ONLY, *(PROTOCOL_LEFTOVERS if experiment == EXPERIMENT else ()))
    return [
        *TRAIN_COMMAND, f"experiment={experiment}", f"test={str(full).lower()}", *overrides,
        f"hydra.run.dir={_quoted(run_dir)}", *(() if full else timing),
        "+callbacks.step_timer._target_=iresnet.bench.timing.StepTimer", f"+callbacks.step_timer.out={_quoted(timer)}",
    ]  # fmt: skip


def run_timed(command: Sequence[str], run_dir: Path, threads: int | None = None) -> float:
    """Runs ``command`` in a fresh process; returns its wall time, start to exit, in seconds.

    ``threads`` sets its ``OMP_NUM_THREADS`` (of each process under DDP). Its output goes to
    ``run_dir/output.log`` as it runs; :class:`BenchmarkError` with the end of it if it fails.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    log = run_dir / "output.log"
    start = time.perf_counter()
    with log.open("w") as out:
        returncode = subprocess.run(list(command), stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - start
    if returncode != 0:
        raise BenchmarkError(f"run failed (exit {returncode}): {' '.join(command)}\n{log.read_text()[-3000:]}")
    return wall


def run_training(
    overrides: Sequence[str], run_dir: Path, full: bool = False, threads: int | None = None,
    experiment: str = EXPERIMENT,
) -> dict:  # fmt: skip
    """Runs :func:`train_command` with :func:`run_timed`; returns the :class:`StepTimer` record plus ``wall_s``."""
    wall = run_timed(train_command(overrides, run_dir, full, experiment), run_dir, threads)
    return {**json.loads((run_dir / "step_timer.json").read_text()), "wall_s": wall}
