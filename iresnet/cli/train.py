"""``iresnet-train [overrides]``: train a flow, test it, write checkpoints and image grids."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger

from iresnet.cli.common import compile_models, compile_summary, hydra_command
from iresnet.cli.rundir import join_log, remove_stale_temporary_files, set_log_aside
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
        **OmegaConf.to_container(cfg.get("module") or {}, resolve=True),
        n_bits=None if n_bins is None else int(round(math.log2(n_bins))),
        eval_logdet=cfg.get("eval_logdet"),
        sample_temperature=cfg.get("temperature", 1.0),
        data=OmegaConf.to_container(cfg.data, resolve=True),
    )


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values()]


# Trainer settings a user sets on the command line: (allowed values, what to pass).
_COUNT = "a whole number"
_TRAINER_SETTINGS = {
    "max_epochs": (lambda v: _is_int(v) and v >= -1, f"{_COUNT}, -1 for no limit"),
    "min_epochs": (lambda v: v is None or (_is_int(v) and v >= 0), f"{_COUNT} >= 0"),
    "max_steps": (lambda v: _is_int(v) and v >= -1, f"{_COUNT}, -1 for no limit"),
    "log_every_n_steps": (lambda v: _is_int(v) and v >= 1, f"{_COUNT} >= 1"),
    "check_val_every_n_epoch": (lambda v: v is None or (_is_int(v) and v >= 1), f"{_COUNT} >= 1"),
    "gradient_clip_val": (lambda v: v is None or (_is_number(v) and v >= 0), "a number >= 0 or null"),
    **{
        f"limit_{stage}_batches": (
            lambda v: v is None or (_is_int(v) and v >= 0) or (_is_number(v) and 0 <= v <= 1),
            "a number of batches (>= 0), a fraction in [0, 1] or null for all",
        )
        for stage in ("train", "val", "test")
    },
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_trainer_settings(trainer_cfg: DictConfig) -> None:
    """``ValueError`` naming the ``trainer.*`` setting whose value Lightning cannot take, and what it takes."""
    for key, (valid, expected) in _TRAINER_SETTINGS.items():
        if key in trainer_cfg and not valid(trainer_cfg[key]):
            raise ValueError(f"trainer.{key} must be {expected}, got {trainer_cfg[key]!r}.")
    if trainer_cfg.get("limit_train_batches") == 0 or trainer_cfg.get("max_epochs") == 0 or trainer_cfg.get("max_steps") == 0:
        raise ValueError(
            "this configuration trains for no step (trainer.limit_train_batches, max_epochs or max_steps is 0); "
            "to evaluate a checkpoint use iresnet-eval ckpt_path=..."
        )


def build_trainer(cfg: DictConfig, loggers: list | None = None, **overrides) -> pl.Trainer:
    """The trainer of ``cfg`` with its callbacks and ``loggers`` (default: the config's)."""
    loggers = build_loggers(cfg) if loggers is None else loggers
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


def _csv_dirs(loggers: list) -> list[Path]:
    return [Path(logger.log_dir) for logger in loggers if isinstance(logger, CSVLogger)]


def train(cfg: DictConfig) -> dict:
    """Fits, tests and returns the final metrics; writes ``metrics.json`` in the run directory.

    A run resumed with ``resume=true`` continues in its directory: the CSV log so far is set
    aside before the loggers start and joined back at the end, and temporary checkpoint files of
    killed processes are removed.
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    check_trainer_settings(cfg.trainer)
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path = resume_checkpoint(cfg)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    resumed_step = None if ckpt_path is None else resumable_checkpoint(ckpt_path, module)["global_step"]
    # The trainer knows this process's global rank under every launcher (Lightning's own,
    # torchrun, SLURM); only rank zero touches the run directory. Its loggers write nothing yet.
    trainer = build_trainer(cfg)
    if trainer.is_global_zero:
        remove_stale_temporary_files(run_dir / "checkpoints")
        for log_dir in _csv_dirs(trainer.loggers) if resumed_step is not None else ():
            set_log_aside(log_dir, resumed_step)
        print(f"run directory: {run_dir}" + (f" (resuming from step {resumed_step})" if ckpt_path else ""))
    if cfg.get("compile"):
        compile_models(module.model, module.eval_model, mode=cfg.get("compile_mode"))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    name = module.metric
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if trainer.is_global_zero and f"test/{name}" in metrics:
            accuracy = f", test accuracy: {metrics['test/acc']:.4f}" if "test/acc" in metrics else ""
            print(f"test {'bits/dim' if name == 'bpd' else 'nats/dim'}: "
                  f"{metrics[f'test/{name}']:.4f} ± {metrics[f'test/{name}_se']:.4f}{accuracy}")
        elif trainer.is_global_zero:
            print(f"no test was run: the trainer took no test batches (trainer.limit_test_batches={trainer.limit_test_batches})")
    if cfg.get("compile") and trainer.is_global_zero:
        print(compile_summary())
    if trainer.is_global_zero:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        for log_dir in _csv_dirs(trainer.loggers):
            join_log(log_dir)
        write_learning_curves(run_dir, name)
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


def objective(cfg: DictConfig) -> float | None:
    """Trains; returns the test (else validation) score, for Hydra sweepers that optimize it."""
    metrics = train(cfg)
    return metrics.get("test/bpd", metrics.get("val/bpd"))


main = hydra_command(objective, "train")


if __name__ == "__main__":
    main()
