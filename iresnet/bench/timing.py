"""Timing training steps: a Lightning callback that records them, and steady-state throughput."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from iresnet.bench.memory import current_rss_mib, peak_cuda_mib, peak_rss_mib


class StepTimer(pl.Callback):
    """Writes ``{"step_s": [...], "batch_size", "world_size", "threads", "parameters", memory...}`` to ``out``.

    ``step_s[k]`` is the wall time between the ends of training batches ``k-1`` and ``k`` (for
    ``k = 0``, from the start of training): one full step, including data loading, forward,
    backward, gradient clipping, the optimizer and scheduler steps, logging and the EMA update
    (which the module runs after this callback, so it falls into the next interval). Only rank 0
    writes; under DDP its steps wait for every rank's gradients.

    Added to a run from the command line: ``iresnet-train
    +callbacks.step_timer._target_=iresnet.bench.timing.StepTimer +callbacks.step_timer.out=t.json``.
    """

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self._ends: list[float] = []
        self._batch_size = 0
        self._rss_at_start: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._rss_at_start = current_rss_mib()
        self._ends = [time.perf_counter()]

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._ends.append(time.perf_counter())
        self._batch_size = len(batch[0])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        record = {
            "step_s": [b - a for a, b in zip(self._ends, self._ends[1:])],
            "batch_size": self._batch_size,
            "world_size": trainer.world_size,
            "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in pl_module.model.parameters()),  # the flow's, not its EMA copy's
            "rss_at_start_mib": self._rss_at_start,
            "peak_rss_mib": peak_rss_mib(),
            "peak_cuda_mib": peak_cuda_mib(pl_module.device),
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(record))


def steady_state(record: dict, warmup_steps: int) -> dict[str, float]:
    """Images/s over the steps of a :class:`StepTimer` record after the first ``warmup_steps``.

    Counts the images of every process (``batch_size * world_size`` per step). The median and
    minimum step times are less sensitive to other load on the machine than the mean.
    """
    steps = record["step_s"][warmup_steps:]
    if not steps:
        raise ValueError(
            f"no timed steps: the run took {len(record['step_s'])} steps, all of them warm-up "
            f"({warmup_steps}); run more steps."
        )
    seconds = sum(steps)
    return {
        "timed_steps": len(steps),
        "step_s": seconds / len(steps),
        "step_s_median": statistics.median(steps),
        "step_s_min": min(steps),
        "images_per_s": len(steps) * record["batch_size"] * record["world_size"] / seconds,
    }
