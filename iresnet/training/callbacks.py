"""Callbacks that write what people look at during training: sample and reconstruction grids."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor

from iresnet.visualize import save_image_grid, save_points_plot, save_reconstruction_grid


def _log_image(trainer: pl.Trainer, tag: str, path: Path) -> None:
    """Also hands the PNG to a TensorBoard logger, when one is configured."""
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            from torchvision.io import read_image

            experiment.add_image(tag, read_image(str(path)), trainer.global_step)


class SampleGrid(pl.Callback):
    """After each validation, writes ``samples/epoch_XXX.png`` from the evaluation (EMA) model.

    Images give a grid; 2-D data give a scatter plot over the validation points. A
    class-conditional model draws the same number of samples for each class, one row per class;
    a model conditioned on features draws one sample for each of the first validation contexts.
    """

    def __init__(self, n: int = 64, temperature: float = 1.0, seed: int = 0, dirname: str = "samples") -> None:
        self.n, self.temperature, self.seed, self.dirname = n, temperature, seed, dirname
        self._reference: tuple[Tensor, Tensor] | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0:
            self._reference = (batch[0].detach(), batch[1].detach())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        model = pl_module.eval_model
        context, nrow = sample_context(model, self.n, None if self._reference is None else self._reference[1])
        gen = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        n = self.n if context is None else len(context)
        samples = model.sample(n, context, self.temperature, generator=gen)
        path = Path(trainer.default_root_dir) / self.dirname / f"epoch_{trainer.current_epoch:03d}.png"
        if samples.dim() == 2:
            points = None if self._reference is None else self._reference[0]
            save_points_plot(samples, path, f"samples, epoch {trainer.current_epoch}", points)
        else:
            save_image_grid(samples, path, nrow=nrow)
        _log_image(trainer, "samples", path)


def sample_context(model, n: int, contexts: Tensor | None) -> tuple[Tensor | None, int | None]:
    """The context to draw about ``n`` samples of ``model`` with, and the grid's row length.

    Unconditional: None. Class-conditional (``num_classes``): each class ``n // num_classes``
    times (at least once), one row per class. Conditioned on features: the first ``n`` of
    ``contexts``.
    """
    if not model.conditional:
        return None, None
    num_classes = getattr(model, "num_classes", None)
    if num_classes:
        per_class = max(1, n // num_classes)
        device = next(model.parameters()).device
        return torch.arange(num_classes, device=device).repeat_interleave(per_class), per_class
    if contexts is None:
        raise ValueError("a model conditioned on features needs contexts to sample with; none were seen.")
    return contexts[:n], None


class ReconstructionGrid(pl.Callback):
    """After each validation, writes the module's invertibility check as image pairs.

    The module encodes and inverts the first validation images (``recon_batch`` of them) and
    keeps them in ``last_reconstruction``; this callback only draws them.
    """

    def __init__(self, dirname: str = "reconstructions") -> None:
        self.dirname = dirname

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        pair = getattr(pl_module, "last_reconstruction", None)
        if trainer.sanity_checking or not trainer.is_global_zero or pair is None or pair[0].dim() != 4:
            return
        path = Path(trainer.default_root_dir) / self.dirname / f"epoch_{trainer.current_epoch:03d}.png"
        save_reconstruction_grid(*pair, path)
        _log_image(trainer, "reconstructions", path)
