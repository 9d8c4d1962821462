"""Stopping training at the first NaN or Inf, with the last good weights saved."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor


class TrainingDivergedError(RuntimeError):
    """The loss or a gradient became NaN or Inf; the message names the step and what to change."""


def _loss_name(pl_module: pl.LightningModule) -> str:
    return f"train/{getattr(pl_module, 'metric', 'loss')}"


def _all_finite(tensors: list[Tensor]) -> bool:
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


class NonFiniteGuard(pl.Callback):
    """Stops training when the loss or a gradient is not finite, before the optimizer uses it.

    The check runs before backward (the loss) and before the optimizer step (the gradients), so
    the weights are still those of the last good step: they are saved to ``filename`` in the
    checkpoint folder (through the trainer, atomically, rank 0 writing), unless some weight or
    buffer is itself already non-finite, in which case the previous checkpoint is left alone.
    Then :class:`TrainingDivergedError` names the step and the last finite training loss.

    Ranks agree on the decision (one all-reduce of a flag per check), so they all stop together.
    """

    def __init__(self, filename: str = "last.ckpt") -> None:
        self.filename = filename
        self._last_finite: tuple[int, Tensor] | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            # global_step counts this batch's optimizer step already; kept as a tensor so that
            # no step waits for the device.
            self._last_finite = (trainer.global_step, loss.detach())

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss)), all=False):
            self._stop(trainer, pl_module, f"{_loss_name(pl_module)} is {float(loss)}")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if trainer.strategy.reduce_boolean_decision(not _all_finite(grads), all=False):
            self._stop(trainer, pl_module, f"a gradient is NaN or Inf ({_loss_name(pl_module)} was finite)")

    def _stop(self, trainer: pl.Trainer, pl_module: pl.LightningModule, what: str) -> None:
        step = trainer.global_step
        if self._last_finite is None:
            last = "no earlier step had a finite loss"
        else:
            step_ok, loss_ok = self._last_finite
            last = f"the last finite {_loss_name(pl_module)} was {float(loss_ok):.4f} at step {step_ok}"
        state = [*pl_module.parameters(), *(b for b in pl_module.buffers() if b.is_floating_point())]
        if _all_finite(state):
            path = self._checkpoint_dir(trainer) / self.filename
            trainer.save_checkpoint(path)
            saved = f"Saved the weights of step {step} (the last good state) to {path}"
            resume = f"ckpt_path={path}"
        else:
            saved = "The weights are already non-finite, so no checkpoint was written over the last good one"
            resume = "ckpt_path=<an earlier checkpoint>"
        raise TrainingDivergedError(
            f"Training stopped: {what} at step {step + 1} (epoch {trainer.current_epoch}); {last}. {saved}. "
            f"Lower optim.lr, raise optim.warmup_iters or lower model.coeff, then resume with {resume}."
        )

    @staticmethod
    def _checkpoint_dir(trainer: pl.Trainer) -> Path:
        callback = trainer.checkpoint_callback
        dirpath = getattr(callback, "dirpath", None)
        return Path(dirpath) if dirpath else Path(trainer.default_root_dir) / "checkpoints"

