"""``iresnet-eval ckpt_path=... [images=path]``: bits/dim ± standard error of a checkpoint on a data
split or on the user's own images."""

from __future__ import annotations

import json
import time

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import RichProgressBar
from torch.utils.data import DataLoader, TensorDataset

from iresnet.cli.common import checkpoint_datamodule, class_labels, hydra_command, writable_output
from iresnet.cli.images import dequantize_for_eval, image_shape, read_images
from iresnet.training import FlowLightningModule
from iresnet.training.checkpoint import load_module


def images_loader(cfg: DictConfig, module: FlowLightningModule) -> DataLoader:
    """Batches ``(x, y)`` of the images at ``cfg.images``, checked and dequantized for evaluation;
    ``y`` is ``cfg.label`` (the class of every image, for class-conditional and hybrid models), else 0."""
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {cfg.batch_size}.")
    model = module.eval_model
    x = read_images(cfg.images, image_shape(model))
    x = dequantize_for_eval(x, module.hparams.n_bits, cfg.seed)
    label = cfg.get("label")
    if label is None and (model.conditional or module.hybrid):
        raise ValueError(
            "images= with a class-conditional or hybrid checkpoint needs the images' class: pass label=<class>."
        )
    if module.hybrid and label is not None:
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < model.num_classes:
            raise ValueError(f"label must be a class in 0..{model.num_classes - 1}, got {label!r}.")
        labels = torch.full((len(x),), label)
    else:
        labels, _ = class_labels(model, label, len(x))
    labels = torch.zeros(len(x), dtype=torch.long) if labels is None else labels.cpu()
    return DataLoader(TensorDataset(x, labels), batch_size=cfg.batch_size)


def evaluate(cfg: DictConfig) -> dict:
    """Evaluates the checkpoint's EMA model; returns and writes the result as JSON."""
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {cfg.split!r}.")
    out = writable_output(cfg.out, cfg.overwrite)
    pl.seed_everything(cfg.seed, verbose=False)
    module = load_module(cfg.ckpt_path)
    if cfg.get("images"):
        split, data = "images", {"dataloaders": images_loader(cfg, module)}
    else:
        split, data = cfg.split, {"datamodule": checkpoint_datamodule(cfg, module)}
    if cfg.get("logdet"):
        module.eval_model.set_logdet_estimator(instantiate(cfg.logdet))
    trainer = instantiate(
        cfg.trainer, logger=False, callbacks=[RichProgressBar()], enable_checkpointing=False
    )
    start = time.perf_counter()
    run = trainer.validate if split == "val" else trainer.test
    run(module, verbose=False, **data)
    seconds = time.perf_counter() - start
    result = {
        "ckpt_path": str(cfg.ckpt_path),
        "split": split,
        "images": cfg.get("images"),
        "metric": module.metric,
        **module.last_eval,
        "seconds": seconds,
        "estimator": repr(module.eval_model.residual_blocks()[0].logdet),
        "estimator_config": OmegaConf.to_container(cfg.logdet) if cfg.get("logdet") else module.hparams.get("eval_logdet")
        or module.hparams.model.get("logdet"),
    }
    given = " (conditional on the labels)" if module.eval_model.conditional else ""
    accuracy = f", accuracy {result['accuracy']:.4f}" if "accuracy" in result else ""
    print(f"{split} {module.metric}{given}: {result['mean']:.4f} ± {result['se']:.4f}{accuracy} "
          f"({result['n']} images, {seconds:.1f} s)")
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


main = hydra_command(evaluate, "eval")


if __name__ == "__main__":
    main()
