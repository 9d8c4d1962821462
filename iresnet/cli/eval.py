"""``iresnet-eval ckpt_path=... [images=path]``: bits/dim ± standard error of a checkpoint on a data
split or on the user's own images."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import RichProgressBar
from torch.utils.data import DataLoader

from iresnet.cli.common import (
    checkpoint_datamodule, class_labels, compile_models, compile_summary, hydra_command, writable_output,
)  # fmt: skip
from iresnet.cli.images import PICTURE_SUFFIXES, image_shape, picture_files, read_images
from iresnet.data import DequantizeCollate, Split, to_unit_interval
from iresnet.data.base import TensorBatches
from iresnet.training import FlowLightningModule
from iresnet.pretrained_models import module_from
from iresnet.training.likelihood import importance_weighted_bpd, per_image_scores


def images_split(cfg: DictConfig, module: FlowLightningModule) -> Split:
    """The images at ``cfg.images``, checked, in [0, 1], with ``y``: ``cfg.label`` (the class of every
    image, for class-conditional and hybrid models), else 0."""
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {cfg.batch_size}.")
    model = module.eval_model
    x = to_unit_interval(read_images(cfg.images, image_shape(model)))
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
    return Split(x, labels)


def draws_of(raw: Split, n_bits: int, seed: int, batch_size: int) -> Callable[[int], DataLoader]:
    """Draw ``j`` of ``raw``'s dequantization: noise keyed to ``(seed + j, image index)``, in order."""

    def draw(j: int) -> DataLoader:
        collate = DequantizeCollate(n_bits, seed=seed + j)
        return DataLoader(TensorBatches(raw), batch_size=batch_size, collate_fn=collate)

    return draw


def image_keys(cfg: DictConfig, n: int) -> tuple[str, list[str]]:
    """The per-image CSV's key column and its values: each file's path for ``images=folder/`` (or
    a picture file), else the index in the split or in the tensor file."""
    images = Path(cfg.images) if cfg.get("images") else None
    if images is not None and images.is_dir():
        return "path", [str(p) for p in picture_files(images)]
    if images is not None and images.suffix.lower() in PICTURE_SUFFIXES:
        return "path", [str(images)]
    return "index", [str(i) for i in range(n)]


def write_per_image(cfg: DictConfig, module: FlowLightningModule, raw: Split, seed: int, batch_size: int, path: Path) -> None:
    """``path``: one CSV row per image, its key, label, score and standard error over ``cfg.per_image_draws`` draws."""
    if module.hparams.n_bits is None:
        raise ValueError("per_image= scores images; this checkpoint models continuous data (points), so leave it out.")
    draws = draws_of(raw, module.hparams.n_bits, seed, batch_size)
    mean, se = per_image_scores(module, draws, cfg.get("per_image_draws", 4))
    key, keys = image_keys(cfg, len(mean))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([key, "label", module.metric, "se"])
        writer.writerows(zip(keys, raw.labels.tolist(), mean.tolist(), se.tolist()))
    print(f"wrote {len(mean)} per-image {module.metric} to {path}")


def evaluate(cfg: DictConfig) -> dict:
    """Evaluates the checkpoint's EMA model (or with ``weights=raw`` its trained weights, with the
    evaluation estimator); returns and writes the result as JSON."""
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {cfg.split!r}.")
    weights = cfg.get("weights", "ema")
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' (the weight average) or 'raw' (the trained weights), got {weights!r}.")
    out = writable_output(cfg.out, cfg.overwrite)
    per_image = writable_output(cfg.per_image, cfg.overwrite) if cfg.get("per_image") else None
    if per_image is not None and per_image.resolve() == out.resolve():
        raise ValueError(f"per_image={cfg.per_image} is the JSON summary's own path (out=); give the CSV another name.")
    pl.seed_everything(cfg.seed, verbose=False)
    module = module_from(cfg.get("ckpt_path"), cfg.get("pretrained"))
    if weights == "raw":
        module.ema.assign(module.model)
    k = cfg.get("importance_samples", 1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"importance_samples must be a positive integer, got {k!r}.")
    if cfg.get("images"):
        raw, seed, batch_size = images_split(cfg, module), cfg.seed, cfg.batch_size
        split, data = "images", {"dataloaders": draws_of(raw, module.hparams.n_bits, seed, batch_size)(0)}
    else:
        datamodule = checkpoint_datamodule(cfg, module)
        raw, seed, batch_size = datamodule.split(cfg.split), datamodule.seed, datamodule.eval_batch_size
        split, data = cfg.split, {"datamodule": datamodule}
    if cfg.get("logdet"):
        module.eval_model.set_logdet_estimator(instantiate(cfg.logdet))
    if cfg.get("compile"):
        compile_models(module.eval_model, mode=cfg.get("compile_mode"))
    trainer = instantiate(
        cfg.trainer, logger=False, callbacks=[RichProgressBar()], enable_checkpointing=False
    )
    start = time.perf_counter()
    run = trainer.validate if split == "val" else trainer.test
    run(module, verbose=False, **data)
    seconds = time.perf_counter() - start
    result = {
        "ckpt_path": cfg.get("ckpt_path"),
        "pretrained": cfg.get("pretrained"),
        "split": split,
        "weights": weights,
        "images": cfg.get("images"),
        "metric": module.metric,
        **module.last_eval,
        "seconds": seconds,
        "estimator": repr(module.eval_model.residual_blocks()[0].logdet),
        "estimator_config": OmegaConf.to_container(cfg.logdet) if cfg.get("logdet") else module.hparams.get("eval_logdet")
        or module.hparams.model.get("logdet"),
    }
    given = " (conditional on the labels)" if module.eval_model.conditional else ""
    given += " (raw weights)" if weights == "raw" else ""
    accuracy = f", accuracy {result['accuracy']:.4f}" if "accuracy" in result else ""
    print(f"{split} {module.metric}{given}: {result['mean']:.4f} ± {result['se']:.4f}{accuracy} "
          f"({result['n']} images, {seconds:.1f} s)")
    if cfg.get("compile"):
        print(compile_summary())
    result["importance_samples"] = k
    if k > 1:
        if module.hparams.n_bits is None:
            raise ValueError("importance_samples needs discrete (dequantized) data; this checkpoint models continuous data.")
        result["importance_weighted"] = weighted = importance_weighted_bpd(
            module, draws_of(raw, module.hparams.n_bits, seed, batch_size), k
        )
        print(f"{split} bpd, importance-weighted with K={k}: {weighted['iw_bpd']:.4f} ± {weighted['iw_bpd_se']:.4f} "
              f"(single-draw bound {weighted['bound_bpd']:.4f}, gain {weighted['gain_bpd']:.4f}); estimator noise "
              f"{weighted['estimator_std_nats']:.3f} nats per image, bias at most {weighted['noise_bias_bound_bpd']:.4f}")
        if weighted["noise_bias_bound_bpd"] > 0.1 * max(weighted["gain_bpd"], 0.0):
            print("note: the estimator's noise can bias the weighted bound by more than a tenth of its gain; evaluate "
                  "with more exact terms or probes, e.g. +logdet='{_target_: iresnet.logdet.RouletteLogDet, "
                  "eval_exact_terms: 40, n_probes: 4}' (docs/concepts.md, section 9).")
    if per_image is not None:
        write_per_image(cfg, module, raw, seed, batch_size, per_image)
        result["per_image"] = str(per_image)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


main = hydra_command(evaluate, "eval")


if __name__ == "__main__":
    main()
