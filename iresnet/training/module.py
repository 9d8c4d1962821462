"""The LightningModule that trains a flow by maximum likelihood (loss = bits per dim)."""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from iresnet.inverse import full_float32_precision
from iresnet.lipschitz import LipschitzReport, lipschitz_report, update_spectral_norms
from iresnet.metrics import bits_per_dim, mean_and_standard_error
from iresnet.models import FlowModel
from iresnet.training.distributed import broadcast_spectral_norms
from iresnet.training.ema import EMA
from iresnet.training.rng import gather_rng_states, rank_seed, set_rng_states

# Residual Flows' optimizer, when the config gives none.
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3, "betas": [0.9, 0.99]}


def build_optimizer(optimizer: Any, params: Iterable[Tensor]) -> torch.optim.Optimizer:
    """The optimizer of the config ``optimizer`` (``_target_`` a ``torch.optim`` class,
    ``_partial_: true``, its arguments but the parameters) with its multi-tensor kernels.

    On the CPU torch defaults to a loop over the parameters, a handful of small operations per
    tensor; the fused kernels (Adam, on CPU and CUDA) or ``foreach`` (the others) make the same
    update, up to rounding, in a few multi-tensor operations. An explicit ``fused`` or
    ``foreach`` in the config wins.
    """
    partial = isinstance(optimizer, (dict, DictConfig)) and optimizer.get("_partial_") is True
    make = instantiate(optimizer) if partial else None
    if not isinstance(make, functools.partial) or not isinstance(make.func, type):
        raise ValueError(
            f"optim.optimizer must be a partial optimizer config (_target_: torch.optim.Adam, _partial_: true, lr: ...), "
            f"got {optimizer!r}."
        )
    params = list(params)
    accepted = inspect.signature(make.func).parameters
    if "fused" in make.keywords or "foreach" in make.keywords:
        return make(params)
    if "fused" in accepted and all(p.device.type in ("cpu", "cuda") for p in params):
        return make(params, fused=True)
    return make(params, foreach=True) if "foreach" in accepted else make(params)


def _constant(progress: float) -> float:
    return 1.0


def _cosine(progress: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


# Learning-rate factor after the warm-up, as a function of the fraction of the remaining steps done.
LR_DECAYS = {"constant": _constant, "cosine": _cosine}


def _plain(cfg: Any) -> Any:
    """Configs are stored as plain containers so checkpoints load with ``weights_only=True``."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class FlowLightningModule(pl.LightningModule):
    """Trains ``model`` on ``-log p(x)`` in bits/dim (or nats/dim for continuous data).

    A conditional model (``model.conditional``) is trained on ``-log p(x | y)`` with the batch's
    ``y`` (labels or context features) as the context; a hybrid model (``model.task``
    ``"hybrid"`` or ``"classification"``) on its ``hybrid_objective``, with the accuracy logged.

    Args:
        model: a config with ``_target_`` that builds a :class:`FlowModel`; kept in the
            checkpoint's hyper-parameters so a checkpoint rebuilds its own model.
        optimizer: a partial optimizer config, ``{_target_: torch.optim.Adam, _partial_: true,
            lr: 1e-3, ...}``; None: Residual Flows' Adam (lr 1e-3, betas 0.9, 0.99).
        warmup_iters: linear learning-rate warm-up over this many optimizer steps.
        lr_decay: after the warm-up, ``"constant"`` keeps the learning rate; ``"cosine"`` lowers it
            as ``(1 + cos(pi p)) / 2`` with ``p`` the fraction of the remaining steps done, towards 0
            at the run's end (``trainer.estimated_stepping_batches``).
        ema_decay: decay of the weight average used for validation, test, sampling and
            checkpoints' evaluation; ``ema_warmup`` ramps it as ``min(decay, (1+t)/(10+t))``.
        n_bits: bit depth of the data (``n_bins = 2**n_bits``); ``None`` for continuous data,
            whose loss is then reported as ``nll`` in nats per dimension.
        eval_logdet: optional estimator config used by the EMA model at validation and test
            (e.g. unbiased roulette with many exact terms for a biased training estimator).
        recon_batch: how many validation images the invertibility check encodes and inverts.
        data: the data config the model is trained on, recorded so evaluation tools find it.
        sample_temperature: the temperature its samples are drawn at (the experiment's), recorded
            as ``iresnet-sample``'s default for the checkpoint.
        spectral_norm_lanczos_steps: after every optimizer step, ``k`` warm-started Lanczos
            products per spectrally normalized layer bring its ``u``, ``v``, ``sigma`` to the new
            weights (:func:`~iresnet.lipschitz.update_spectral_norms`); 0: only the forward's
            ``n_power_iterations``. Power iteration trails a moving weight, so without the
            refresh training divides by estimates below the layers' norms and optimizes a less
            constrained model than the one evaluated (docs/concepts.md, section 1).
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any = None,
        warmup_iters: int = 200,
        lr_decay: str = "constant",
        ema_decay: float = 0.999,
        ema_warmup: bool = True,
        n_bits: int | None = 8,
        eval_logdet: Any = None,
        recon_batch: int = 16,
        data: Any = None,
        sample_temperature: float = 1.0,
        spectral_norm_lanczos_steps: int = 0,
    ) -> None:
        steps = spectral_norm_lanczos_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(
                f"module.spectral_norm_lanczos_steps must be an integer >= 0, got {spectral_norm_lanczos_steps!r}; "
                "use 0 (power iteration in the forward only) or e.g. 5."
            )
        if lr_decay not in LR_DECAYS:
            raise ValueError(f"optim.lr_decay must be one of {sorted(LR_DECAYS)}, got {lr_decay!r}.")
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "eval_logdet", "data"])
        self.hparams.update(
            model=_plain(model), optimizer=_plain(optimizer) or DEFAULT_OPTIMIZER, eval_logdet=_plain(eval_logdet),
            data=_plain(data),
        )  # fmt: skip
        self.model: FlowModel = instantiate(self.hparams.model)
        self.ema = EMA(self.model, ema_decay, ema_warmup)
        if eval_logdet is not None:
            self.ema.module.set_logdet_estimator(instantiate(self.hparams.eval_logdet))
        self.metric = "bpd" if n_bits is not None else "nll"
        self.hybrid = getattr(self.model, "task", "density") != "density"
        self._val_scores: list[Tensor] = []
        self._val_correct: list[Tensor] = []
        self.last_reconstruction: tuple[Tensor, Tensor] | None = None
        self.last_reconstruction_context: Tensor | None = None
        self.last_eval: dict[str, float] = {}
        self._lipschitz_report: LipschitzReport | None = None

    # ----------------------------------------------------------------- loss
    def context_of(self, model: FlowModel, batch: tuple[Tensor, Tensor]) -> Tensor | None:
        """The batch's ``y`` for a conditional model, else None."""
        return batch[1] if model.conditional else None

    def score(self, log_p: Tensor, x: Tensor) -> Tensor:
        """Bits/dim (or nats/dim) of ``log p(x)``, per sample."""
        dims = x[0].numel()
        if self.hparams.n_bits is None:
            return -log_p / dims
        return bits_per_dim(log_p, dims, n_bins=2**self.hparams.n_bits)

    def per_sample_loss(self, model: FlowModel, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """Per sample: ``loss`` (what training minimizes), ``score`` (bits/dim or nats/dim of
        ``log p(x)``, or of ``log p(x | y)``), ``logdet``; for hybrid models ``cross_entropy``
        (nats) and ``correct``. A hybrid's loss is its objective ``-(lambda log p(x) + log p(y|x))``
        divided by ``lambda D ln 2``: bits/dim plus the cross-entropy weighted by ``1 / (lambda D)``,
        in bits (a classifier's: the cross-entropy in bits)."""
        x, y = batch[0], batch[1]
        if not self.hybrid:
            log_p, logdet = model.log_prob_and_logdet(x, self.context_of(model, batch))
            score = self.score(log_p, x)
            return {"loss": score, "score": score, "logdet": logdet}
        terms = model.hybrid_objective(x, y)
        score = self.score(terms.log_prob, x)
        # The objective in bits per dimension of the density term: bits/dim + CE / (lambda D ln 2)
        # (a classifier's: the cross-entropy in bits).
        if model.task == "classification":
            loss = terms.cross_entropy / math.log(2)
        else:
            loss = score + terms.cross_entropy / (math.log(2) * model.hybrid_weight * x[0].numel())
        return {
            "loss": loss,
            "score": score.detach(),
            "logdet": terms.logdet,
            "cross_entropy": terms.cross_entropy.detach(),
            "correct": (terms.logits.argmax(1) == y).float(),
        }

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        out = self.per_sample_loss(self.model, batch)
        loss = out["loss"].mean()
        b = batch[0].shape[0]
        self.log(f"train/{self.metric}", out["score"].detach().mean(), prog_bar=not self.hybrid, batch_size=b)
        if self.hybrid:
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=b)
            self.log("train/cross_entropy", out["cross_entropy"].mean(), batch_size=b)
            self.log("train/acc", out["correct"].mean(), prog_bar=True, batch_size=b)
        # Moments of the log-det estimate over the batch, and the roulette's number of terms.
        logdet = out["logdet"].detach()
        self.log("train/logdet_mean", logdet.mean(), batch_size=b)
        if b > 1:
            self.log("train/logdet_std", logdet.std(), batch_size=b)
        # The estimator's own record: a compiled block keeps none.
        n_terms = getattr(self.model.residual_blocks()[0].logdet, "last_n_terms", None)
        if n_terms is not None:
            self.log("train/logdet_terms", float(n_terms), batch_size=b)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        steps = self.hparams.get("spectral_norm_lanczos_steps", 0)
        if steps:
            # One Krylov pass of `steps` products from the last vectors, in the weights' dtype:
            # every rank computes the same from the same weights.
            update_spectral_norms(self.model, max_iter=steps, lanczos_steps=steps, dtype=self.dtype)
        # Here rather than in on_train_batch_end, which runs after the callbacks': a checkpoint
        # saved at the end of a batch must hold the average of the weights it holds.
        self.ema.update(self.model)
        self._lipschitz_report = None  # the evaluation weights moved

    def on_train_end(self) -> None:
        # The last step's power iteration ran on each rank separately.
        broadcast_spectral_norms(self)

    # ---------------------------------------------------- random streams
    def setup(self, stage: str) -> None:
        # Data-parallel ranks start from one seed (seed_everything); each draws its own
        # dequantization noise, probes and roulette lengths from a stream of its own.
        if stage == "fit" and self.trainer.world_size > 1:
            seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
            torch.manual_seed(rank_seed(seed, self.trainer.global_rank))

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Optimizer, EMA, spectral-norm vectors and the loader's place are saved by Lightning; the
        # random streams are not: every rank's, so that each continues its own.
        checkpoint["rng_states"] = gather_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if isinstance(states, dict):  # written before checkpoints held every rank's
            states = [states]
        if states:
            rank = self.trainer.global_rank if self._trainer is not None else 0
            # A run resumed on more ranks than it saved: the others continue from their own seeds.
            if rank < len(states):
                set_rng_states(states[rank])

    # ----------------------------------------------------------- evaluation
    @property
    def eval_model(self) -> FlowModel:
        """The weight average: what validation, test, sampling and inversion use."""
        return self.ema.module

    def prepare_eval_model(self) -> FlowModel:
        """Brings spectral norms to tolerance so bounds hold and inversion is exact."""
        model = self.eval_model.eval()
        update_spectral_norms(model)
        return model

    def on_validation_epoch_start(self) -> None:
        self.prepare_eval_model()
        # Every rank evaluates its shard with rank 0's spectral norms.
        broadcast_spectral_norms(self)
        self._val_scores, self._val_correct = [], []
        self._lipschitz_report = None

    on_test_epoch_start = on_validation_epoch_start

    def _eval_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> None:
        # Evaluation in full float32 whatever training ran in (TF32, trainer.precision=bf16-mixed), so
        # that bits/dim compare across runs; reconstruction needs it to reach its tolerance.
        with full_float32_precision(), torch.autocast(batch[0].device.type, enabled=False):
            self._full_precision_eval_step(batch, batch_idx, stage)

    def _full_precision_eval_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> None:
        out = self.per_sample_loss(self.eval_model, batch)
        self._val_scores.append(out["score"].detach())
        if "correct" in out:
            self._val_correct.append(out["correct"])
        if batch_idx == 0 and self.hparams.recon_batch > 0:
            n = self.hparams.recon_batch
            originals = batch[0][:n]
            context = self.context_of(self.eval_model, batch)
            context = None if context is None else context[:n]
            reconstructions = self.reconstruct(originals, context)
            self.last_reconstruction, self.last_reconstruction_context = (originals, reconstructions), context
            self.log(f"{stage}/recon_error", (reconstructions - originals).abs().max())

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        scores = self.all_gather(torch.cat(self._val_scores)).flatten()
        mean, se = mean_and_standard_error(scores)
        self.last_eval = {"mean": float(mean), "se": float(se), "n": int(scores.numel())}
        self.log(f"{stage}/{self.metric}", mean, prog_bar=True, rank_zero_only=True, sync_dist=False)
        self.log(f"{stage}/{self.metric}_se", se, rank_zero_only=True)
        report = self.eval_lipschitz_report()
        self.log(f"{stage}/max_layer_sigma", report.max_layer_sigma)
        self.log(f"{stage}/bounds_below_one", float(not report.any_bound_reaches_one))
        if self._val_correct:
            accuracy = self.all_gather(torch.cat(self._val_correct)).float().mean()
            self.last_eval["accuracy"] = float(accuracy)
            self.log(f"{stage}/acc", accuracy, prog_bar=True, rank_zero_only=True, sync_dist=False)
        self._val_scores, self._val_correct = [], []

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def eval_lipschitz_report(self) -> LipschitzReport:
        """The evaluation model's :func:`~iresnet.lipschitz.lipschitz_report`, computed once per
        validation or test (its norms are computed afresh, and the weights do not move within one)."""
        if self._lipschitz_report is None:
            self._lipschitz_report = lipschitz_report(self.eval_model)
        return self._lipschitz_report

    def reconstruct(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``inverse(forward(x))`` under the evaluation model: the invertibility check."""
        return self.eval_model.reconstruct(x, context)

    # ------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> dict:
        hp = self.hparams
        opt = build_optimizer(hp.optimizer, self.model.parameters())
        warmup = max(1, hp.warmup_iters)
        decay = LR_DECAYS[hp.get("lr_decay", "constant")]
        total = self.trainer.estimated_stepping_batches if decay is not _constant else 1
        if math.isinf(total):
            raise ValueError("optim.lr_decay=cosine needs the run's length: set trainer.max_epochs or trainer.max_steps.")
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: min(1.0, (step + 1) / warmup) * decay((step - warmup) / max(1, total - warmup))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
