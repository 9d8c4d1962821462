"""The LightningModule that trains a flow by maximum likelihood (loss = bits per dim)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from iresnet.lipschitz import lipschitz_report, update_spectral_norms
from iresnet.metrics import bits_per_dim, mean_and_standard_error
from iresnet.models import FlowModel
from iresnet.training.distributed import broadcast_spectral_norms
from iresnet.training.ema import EMA
from iresnet.training.rng import rng_states, set_rng_states

OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}


def build_optimizer(name: str, params: Iterable[Tensor], **kwargs: Any) -> torch.optim.Optimizer:
    """The optimizer ``name`` (a key of ``OPTIMIZERS``) with its multi-tensor kernels.

    On the CPU torch defaults to a loop over the parameters, a handful of small operations per
    tensor: 7.8 ms a step for the protocol model's 175 tensors, against 2.4 ms fused (Adam, on
    CPU and CUDA) and 6 ms with ``foreach`` (Adamax, other devices). Same update up to rounding.
    """
    cls = OPTIMIZERS[name]
    params = list(params)
    fusable = "fused" in inspect.signature(cls).parameters
    if fusable and all(p.device.type in ("cpu", "cuda") for p in params):
        return cls(params, **kwargs, fused=True)
    return cls(params, **kwargs, foreach=True)


def _plain(cfg: Any) -> Any:
    """Configs are stored as plain containers so checkpoints load with ``weights_only=True``."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class FlowLightningModule(pl.LightningModule):
    """Trains ``model`` on ``-log p(x)`` in bits/dim (or nats/dim for continuous data).

    Args:
        model: a config with ``_target_`` that builds a :class:`FlowModel`; kept in the
            checkpoint's hyper-parameters so a checkpoint rebuilds its own model.
        optimizer: ``"adam"`` or ``"adamax"``; ``lr``, ``betas``, ``weight_decay`` go to it.
        warmup_iters: linear learning-rate warm-up over this many optimizer steps.
        ema_decay: decay of the weight average used for validation, test, sampling and
            checkpoints' evaluation; ``ema_warmup`` ramps it as ``min(decay, (1+t)/(10+t))``.
        n_bits: bit depth of the data (``n_bins = 2**n_bits``); ``None`` for continuous data,
            whose loss is then reported as ``nll`` in nats per dimension.
        eval_logdet: optional estimator config used by the EMA model at validation and test
            (e.g. unbiased roulette with many exact terms for a biased training estimator).
        recon_batch: how many validation images the invertibility check encodes and inverts.
        data: the data config the model is trained on, recorded so evaluation tools find it.
    """

    def __init__(
        self,
        model: Any,
        optimizer: str = "adam",
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        warmup_iters: int = 200,
        ema_decay: float = 0.999,
        ema_warmup: bool = True,
        n_bits: int | None = 8,
        eval_logdet: Any = None,
        recon_batch: int = 16,
        data: Any = None,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}.")
        betas = (float(betas[0]), float(betas[1]))
        self.save_hyperparameters(ignore=["model", "eval_logdet", "data"])
        self.hparams.update(model=_plain(model), eval_logdet=_plain(eval_logdet), data=_plain(data))
        self.model: FlowModel = instantiate(self.hparams.model)
        self.ema = EMA(self.model, ema_decay, ema_warmup)
        if eval_logdet is not None:
            self.ema.module.set_logdet_estimator(instantiate(self.hparams.eval_logdet))
        self.metric = "bpd" if n_bits is not None else "nll"
        self._val_scores: list[Tensor] = []
        self.last_reconstruction: tuple[Tensor, Tensor] | None = None
        self.last_eval: dict[str, float] = {}

    # ----------------------------------------------------------------- loss
    def per_sample_loss(self, model: FlowModel, x: Tensor) -> tuple[Tensor, Tensor]:
        """Bits/dim (or nats/dim) per sample and the flow's log-determinant, both (B,)."""
        log_p, logdet = model.log_prob_and_logdet(x)
        dims = x[0].numel()
        if self.hparams.n_bits is None:
            return -log_p / dims, logdet
        return bits_per_dim(log_p, dims, n_bins=2 ** self.hparams.n_bits), logdet

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x = batch[0]
        losses, logdet = self.per_sample_loss(self.model, x)
        loss = losses.mean()
        b = x.shape[0]
        self.log(f"train/{self.metric}", loss, prog_bar=True, batch_size=b)
        # Moments of the log-det estimate over the batch, and the roulette's number of terms.
        self.log("train/logdet_mean", logdet.detach().mean(), batch_size=b)
        self.log("train/logdet_std", logdet.detach().std(), batch_size=b)
        n_terms = getattr(self.model.residual_blocks()[0].logdet, "last_n_terms", None)
        if n_terms is not None:
            self.log("train/logdet_terms", float(n_terms), batch_size=b)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here rather than in on_train_batch_end, which runs after the callbacks': a checkpoint
        # saved at the end of a batch must hold the average of the weights it holds.
        self.ema.update(self.model)

    def on_train_end(self) -> None:
        # The last step's power iteration ran on each rank separately.
        broadcast_spectral_norms(self)

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Optimizer, EMA and spectral-norm vectors are saved by Lightning (state_dict); the
        # random streams are not.
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])

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
        self._val_scores = []

    on_test_epoch_start = on_validation_epoch_start

    def _eval_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> None:
        x = batch[0]
        self._val_scores.append(self.per_sample_loss(self.eval_model, x)[0].detach())
        if batch_idx == 0 and self.hparams.recon_batch > 0:
            originals = x[: self.hparams.recon_batch]
            reconstructions = self.reconstruct(originals)
            self.last_reconstruction = (originals, reconstructions)
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
        report = lipschitz_report(self.eval_model)
        self.log(f"{stage}/max_layer_sigma", report.max_layer_sigma)
        self.log(f"{stage}/bounds_below_one", float(not report.any_bound_reaches_one))
        self._val_scores = []

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def reconstruct(self, x: Tensor) -> Tensor:
        """``inverse(forward(x))`` under the evaluation model: the invertibility check."""
        return self.eval_model.reconstruct(x)

    # ------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> dict:
        hp = self.hparams
        kwargs = {"lr": hp.lr, "betas": tuple(hp.betas), "weight_decay": hp.weight_decay}
        opt = build_optimizer(hp.optimizer, self.model.parameters(), **kwargs)
        warmup = max(1, hp.warmup_iters)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
