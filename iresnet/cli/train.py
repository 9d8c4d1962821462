"""``iresnet-train [overrides]``: train a flow, test it, write checkpoints and image grids."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger

from iresnet.cli.common import apply_runtime_config, config_dir, exit_on_user_error
from iresnet.training import FlowLightningModule
from iresnet.training.checkpoint import CheckpointError, resumable_checkpoint
from iresnet.visualize import save_curves


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


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``ckpt_path=...``, or the run's ``last.ckpt`` with ``resume=true``."""
    if not cfg.get("resume"):
        return cfg.get("ckpt_path")
    if cfg.get("ckpt_path"):
        raise ValueError("Pass either resume=true (with run_dir=...) or ckpt_path=..., not both.")
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(
            f"resume=true found no checkpoints/last.ckpt in the run directory {str(path.parents[1])!r}; "
            "pass the run to continue, e.g. resume=true run_dir=runs/train/<date>, or ckpt_path=<file>."
        )
    return str(path)


def keep_earlier_metrics(trainer: pl.Trainer, step: int) -> None:
    """Renames a CSV logger's ``metrics.csv`` to ``metrics_until_step_<step>.csv``.

    Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts, which would erase
    the curve before the interruption when a run resumes in its own directory.
    """
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger) and (old := Path(logger.log_dir) / "metrics.csv").is_file():
            old.rename(old.with_name(f"metrics_until_step_{step}.csv"))


def train(cfg: DictConfig) -> dict:
    """Fits, tests and returns the final metrics; writes ``metrics.json`` in the run directory."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path = resume_checkpoint(cfg)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    resumed_step = None if ckpt_path is None else resumable_checkpoint(ckpt_path, module)["global_step"]
    trainer = build_trainer(cfg)
    if trainer.is_global_zero:
        print(f"run directory: {run_dir}" + (f" (resuming from step {resumed_step})" if ckpt_path else ""))
    if ckpt_path is not None:
        keep_earlier_metrics(trainer, resumed_step)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        name = module.metric
        if trainer.is_global_zero:
            accuracy = f", test accuracy: {metrics['test/acc']:.4f}" if "test/acc" in metrics else ""
            print(f"test {'bits/dim' if name == 'bpd' else 'nats/dim'}: "
                  f"{metrics[f'test/{name}']:.4f} ± {metrics[f'test/{name}_se']:.4f}{accuracy}")
    if trainer.is_global_zero:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        write_learning_curves(run_dir, module.metric)
    return metrics


def write_learning_curves(run_dir: Path, metric: str) -> Path | None:
    """``curves.png``: training and validation loss against the step, from the CSV log."""
    log = run_dir / "csv" / "metrics.csv"
    if not log.is_file():
        return None
    curves: dict[str, tuple[list[float], list[float]]] = {}
    with log.open() as f:
        for row in csv.DictReader(f):
            for name in (f"train/{metric}", f"val/{metric}"):
                if row.get(name):
                    steps, values = curves.setdefault(name, ([], []))
                    steps.append(float(row["step"]))
                    values.append(float(row[name]))
    if not curves:
        return None
    unit = "bits/dim" if metric == "bpd" else "nats/dim"
    return save_curves(curves, run_dir / "curves.png", "step", unit)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    apply_runtime_config(cfg)
    metrics = train(cfg)
    # Returned for Hydra sweepers that optimize the objective.
    return metrics.get("test/bpd", metrics.get("val/bpd"))


if __name__ == "__main__":
    main()
