"""Checkpoints a crash cannot leave half done, and step checkpoints a resumed run can replay exactly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, syncs it to disk, then renames it.

    A rename within one directory replaces the file atomically on POSIX file systems, so a kill
    (SIGKILL, a scheduler's time limit), a full disk or a lost node at any moment leaves either
    the previous checkpoint or the new one under the name, never a truncated file. Lightning's
    own writer stages the file in the system temp directory; on clusters that is often another
    file system, where the final move is a copy that a kill can interrupt halfway.

    Remote paths (``s3://`` and the like) keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}.")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Hidden and named after the process, so concurrent writers and globs for *.ckpt miss it.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Makes the rename itself durable (a power loss could otherwise undo it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint(every_n_train_steps=n)`` that skips an epoch's last step.

    A state saved after an epoch's last training step but before its validation would make a
    resumed run skip that validation (Lightning counts the epoch as done), and the random draws
    it makes, so the run would continue differently. The epoch's own checkpoint, written after
    its validation, covers that step; a kill during validation resumes from the step checkpoint
    before, and replays the end of the epoch and its validation exactly.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
