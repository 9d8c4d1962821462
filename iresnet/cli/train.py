"""``iresnet-train [overrides]``: train a flow, test it, write checkpoints and image grids."""

from __future__ import annotations

import json
import math
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor

from iresnet.cli.common import config_dir, exit_on_user_error
from iresnet.training import FlowLightningModule


def build_module(cfg: DictConfig, datamodule: pl.LightningDataModule) -> FlowLightningModule:
    """The LightningModule for ``cfg``, with the model's input shape taken from the data."""
    model_cfg = cfg.model.copy()
    with open_dict(model_cfg):
        if "input_shape" in model_cfg and model_cfg.input_shape is None:
            model_cfg.input_shape = list(datamodule.dims)
    n_bins = getattr(datamodule, "n_bins", None)
    return FlowLightningModule(
        model=model_cfg,
        **OmegaConf.to_container(cfg.optim, resolve=True),
        n_bits=None if n_bins is None else int(round(math.log2(n_bins))),
        eval_logdet=cfg.get("eval_logdet"),
        data=OmegaConf.to_container(cfg.data, resolve=True),
    )


def build_trainer(cfg: DictConfig, **overrides) -> pl.Trainer:
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if not loggers:
        # Without a logger there is nowhere to record the learning rate (~logger).
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)


def train(cfg: DictConfig) -> dict:
    """Fits, tests and returns the final metrics; writes ``metrics.json`` in the run directory."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    trainer = build_trainer(cfg)
    if trainer.is_global_zero:
        print(f"run directory: {run_dir}")
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        name = module.metric
        if trainer.is_global_zero:
            print(f"test {'bits/dim' if name == 'bpd' else 'nats/dim'}: "
                  f"{metrics[f'test/{name}']:.4f} ± {metrics[f'test/{name}_se']:.4f}")
    if trainer.is_global_zero:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # Returned for Hydra sweepers that optimize the objective.
    return metrics.get("test/bpd", metrics.get("val/bpd"))


if __name__ == "__main__":
    main()
