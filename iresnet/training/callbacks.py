"""Callbacks that write what people look at during training: sample and reconstruction grids."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor

from iresnet.quality import SampleScorer
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


class SampleScore(pl.Callback):
    """After each validation (every ``every_n_epochs``), scores ``n`` samples of the evaluation (EMA)
    model with the dataset's classifier (:mod:`iresnet.quality`) and logs ``samples/recognizability``,
    ``samples/class_entropy_ratio`` and ``samples/frechet_distance``, with the test images' own
    scores at the same ``n`` as ``test_images/...`` (the ceiling).

    Image data with labels only; other data, models conditioned on features and ``fast_dev_run``
    are skipped. A class-conditional model draws every class equally often. The classifier is
    trained on the training split the first time (``classifier_steps`` batches, seeded) and cached
    under ``cache_dir``; sampling uses its own generator, so training's random streams are untouched.
    """

    def __init__(
        self,
        n: int = 256,
        temperature: float = 1.0,
        seed: int = 0,
        cache_dir: str = "cache",
        classifier_steps: int = 500,
        every_n_epochs: int = 1,
    ) -> None:
        if n < 4 or every_n_epochs < 1:
            raise ValueError(f"SampleScore needs n >= 4 and every_n_epochs >= 1, got n={n}, every_n_epochs={every_n_epochs}.")
        self.n, self.temperature, self.seed = n, temperature, seed
        self.cache_dir, self.classifier_steps, self.every_n_epochs = cache_dir, classifier_steps, every_n_epochs
        self._scorer = None

    def _applies(self, trainer: pl.Trainer, pl_module) -> bool:
        return (
            not trainer.sanity_checking
            and not trainer.fast_dev_run
            and trainer.is_global_zero
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
            and hasattr(trainer.datamodule, "dequantized")
            and (not pl_module.eval_model.conditional or bool(getattr(pl_module.eval_model, "num_classes", None)))
        )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not self._applies(trainer, pl_module):
            return
        if self._scorer is None:
            self._scorer = SampleScorer.from_datamodule(trainer.datamodule, self.cache_dir, steps=self.classifier_steps)
        model = pl_module.eval_model
        context, _ = sample_context(model, self.n, None)
        gen = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        samples = model.sample(self.n if context is None else len(context), context, self.temperature, generator=gen)
        report = self._scorer.report(samples.float().cpu())
        scores = {f"samples/{k}": v for k, v in report["samples"].items() if k != "n"}
        scores.update({f"test_images/{k}": v for k, v in report["test_images"].items() if k != "n"})
        pl_module.log_dict(scores, rank_zero_only=True)
