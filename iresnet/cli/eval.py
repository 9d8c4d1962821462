"""``iresnet-eval ckpt_path=...``: bits/dim ± standard error of a checkpoint on a data split."""

from __future__ import annotations

import json
import time

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import RichProgressBar

from iresnet.cli.common import checkpoint_datamodule, config_dir, exit_on_user_error, writable_output
from iresnet.training.checkpoint import load_module


def evaluate(cfg: DictConfig) -> dict:
    """Evaluates the checkpoint's EMA model; returns and writes the result as JSON."""
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {cfg.split!r}.")
    out = writable_output(cfg.out, cfg.overwrite)
    pl.seed_everything(cfg.seed, verbose=False)
    module = load_module(cfg.ckpt_path)
    datamodule = checkpoint_datamodule(cfg, module)
    if cfg.get("logdet"):
        module.eval_model.set_logdet_estimator(instantiate(cfg.logdet))
    trainer = instantiate(
        cfg.trainer, logger=False, callbacks=[RichProgressBar()], enable_checkpointing=False
    )
    start = time.perf_counter()
    run = trainer.test if cfg.split == "test" else trainer.validate
    run(module, datamodule=datamodule, verbose=False)
    seconds = time.perf_counter() - start
    result = {
        "ckpt_path": str(cfg.ckpt_path),
        "split": cfg.split,
        "metric": module.metric,
        **module.last_eval,
        "seconds": seconds,
        "estimator": repr(module.eval_model.residual_blocks()[0].logdet),
        "estimator_config": OmegaConf.to_container(cfg.logdet) if cfg.get("logdet") else module.hparams.get("eval_logdet")
        or module.hparams.model.get("logdet"),
    }
    print(f"{cfg.split} {module.metric}: {result['mean']:.4f} ± {result['se']:.4f} "
          f"({result['n']} images, {seconds:.1f} s)")
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
