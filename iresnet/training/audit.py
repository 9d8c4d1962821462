"""A check after each validation that the evaluation model is still provably invertible."""

from __future__ import annotations

import warnings

import pytorch_lightning as pl
from torch import Tensor, nn

from iresnet.lipschitz import BranchBound, LayerLipschitz, LipschitzReport, lipschitz_report


class InvertibilityWarning(UserWarning):
    """A residual branch's Lipschitz bound reached 1, or inverting the model lost precision."""


def branch_problem(report: LipschitzReport, branch: BranchBound) -> str:
    """Names the residual block whose bound is not below 1 and the layer that does it."""
    if branch.unnormalized:
        return (
            f"residual block {branch.name!r} has no Lipschitz bound: its layers "
            f"{', '.join(branch.unnormalized)} are not spectral-normalized"
        )
    layers = [layer for layer in report.layers if layer.name in branch.layers]
    worst = max(layers, key=lambda layer: layer.normalized_sigma)
    return (
        f"residual block {branch.name!r} has Lipschitz bound {branch.bound:.4f} >= 1; its largest "
        f"layer {worst.name!r} has sigma {worst.normalized_sigma:.4f} (coeff {worst.coeff})"
    )


def layer_problem(layer: LayerLipschitz) -> str:
    """Names the layer whose used weight's norm exceeds its ``coeff``: its estimate is stale."""
    return (
        f"layer {layer.name!r} has operator norm {layer.normalized_sigma:.4f} > coeff {layer.coeff}: the "
        f"spectral-norm estimate it divides by, {layer.estimate:.4f}, trails its weight's norm {layer.sigma:.4f} "
        "(run iresnet.lipschitz.update_spectral_norms, or raise optim.spectral_norm_lanczos_steps)"
    )


def worst_inverse(model: nn.Module) -> str:
    """The block whose latest inverse solve left the largest residual, with its statistics."""
    solved = [
        (name, m.last_inverse_stats) for name, m in model.named_modules()
        if getattr(m, "last_inverse_stats", None) is not None
    ]  # fmt: skip
    if not solved:
        return "no block recorded an inverse solve"
    name, stats = max(solved, key=lambda item: item[1].residual)
    state = "converged" if stats.converged else "did not converge"
    return (
        f"block {name!r} left the largest residual, {stats.residual:.3g} after {stats.iterations} "
        f"iterations ({state})"
    )


class InvertibilityAudit(pl.Callback):
    """After each validation, checks the Lipschitz bounds and the reconstruction error.

    The norms are those of :func:`~iresnet.lipschitz.lipschitz_report`, computed afresh from the
    weights the evaluation model uses (the module's ``eval_lipschitz_report()`` where it has one,
    so that one validation computes them once). Logs ``val/max_branch_bound`` (the largest
    product of layer norms over the residual branches; below 1 guarantees invertibility) next to
    the module's ``val/max_layer_sigma`` and ``val/recon_error``, and issues an
    :class:`InvertibilityWarning` naming the layer when a layer's norm exceeds its ``coeff`` (a
    stale estimate), the block and layer when a bound reaches 1, or the block when
    ``max|f^-1(f(x)) - x|`` on the module's reconstruction batch exceeds ``max_recon_error``
    (default: a quarter of one 8-bit level, 1/255).
    """

    def __init__(self, max_recon_error: float = 1e-3) -> None:
        if not max_recon_error > 0:
            raise ValueError(f"max_recon_error must be positive, got {max_recon_error}.")
        self.max_recon_error = max_recon_error

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        model = pl_module.eval_model
        report = pl_module.eval_lipschitz_report() if hasattr(pl_module, "eval_lipschitz_report") else lipschitz_report(model)
        if report.branches:
            pl_module.log("val/max_branch_bound", max(branch.bound for branch in report.branches))
        problems = [layer_problem(layer) for layer in report.layers_above_coeff]
        problems += [branch_problem(report, branch) for branch in report.branches if not branch.bound < 1]
        pair: tuple[Tensor, Tensor] | None = getattr(pl_module, "last_reconstruction", None)
        if pair is not None:
            error = float((pair[1] - pair[0]).abs().max())
            if not error <= self.max_recon_error:
                # again, to read each block's inverse statistics
                pl_module.reconstruct(pair[0], getattr(pl_module, "last_reconstruction_context", None))
                problems.append(
                    f"the reconstruction error max|f^-1(f(x)) - x| = {error:.3g} exceeds "
                    f"max_recon_error={self.max_recon_error:g}; {worst_inverse(model)}"
                )
        if problems and trainer.is_global_zero:
            warnings.warn(
                f"Invertibility audit at epoch {trainer.current_epoch}, step {trainer.global_step}: "
                + "; ".join(problems)
                + ". Lower model.coeff, raise model.n_power_iterations or the solver's max_iter.",
                InvertibilityWarning,
                stacklevel=2,
            )
