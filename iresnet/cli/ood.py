"""``iresnet-ood ckpt_path=...|pretrained=... ood=fashion_mnist|mnist5k|mnist|images=DIR out=ood.json``:
how well a density model's scores tell its own test images from another set's."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from iresnet.cli.common import checkpoint_datamodule, hydra_command, writable_output
from iresnet.cli.eval import draws_of
from iresnet.cli.images import image_shape, read_images
from iresnet.data import MNISTDataModule, Mnist5kDataModule, Split, check_images, to_unit_interval
from iresnet.data.fashion_subset import fashion_mnist_or_subset
from iresnet.ood import SCORES, compressed_bits, detection_metrics, ood_scores
from iresnet.ood.plots import save_score_histogram
from iresnet.pretrained_models import module_from
from iresnet.training import FlowLightningModule
from iresnet.training.likelihood import per_image_scores

OOD_DATA = ("fashion_mnist", "mnist5k", "mnist")


def ood_split(cfg: DictConfig, shape: tuple[int, ...]) -> tuple[Split, str]:
    """The out-of-distribution images (``cfg.ood``'s test split or ``cfg.images``) and their name."""
    if bool(cfg.get("ood")) == bool(cfg.get("images")):
        raise ValueError(
            f"pass exactly one of ood=<{'|'.join(OOD_DATA)}> (a dataset's test split) and images=DIR (your own images)."
        )
    if cfg.get("images"):
        x = read_images(cfg.images, shape)
        return Split(x, torch.zeros(len(x), dtype=torch.long)), str(cfg.images)
    if cfg.ood == "fashion_mnist":
        datamodule = fashion_mnist_or_subset(root=cfg.paths.data_dir)
    elif cfg.ood == "mnist5k":
        datamodule = Mnist5kDataModule()
    elif cfg.ood == "mnist":
        datamodule = MNISTDataModule(root=cfg.paths.data_dir)
    else:
        raise ValueError(f"ood must be one of {', '.join(OOD_DATA)} (or pass images=DIR), got {cfg.ood!r}.")
    split = datamodule.split("test")
    check_images(split.inputs, shape, where=f"ood={cfg.ood}")
    return split, cfg.ood


def first(split: Split, n: int | None) -> Split:
    """The first ``n`` images of ``split`` (all for None)."""
    return Split(split.inputs[:n], split.labels[:n])


def scored(module: FlowLightningModule, split: Split, cfg: DictConfig) -> np.ndarray:
    """Each image's bits/dim under the model, averaged over ``cfg.draws`` draws: ``(N,)``."""
    split = Split(to_unit_interval(split.inputs), split.labels)
    bpd, _ = per_image_scores(module, draws_of(split, module.hparams.n_bits, cfg.seed, cfg.batch_size), cfg.draws)
    return bpd.numpy()


def detect(cfg: DictConfig) -> dict:
    """Scores both sets, prints and writes each score's AUROC, AUPR and FPR95, and its histogram."""
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {cfg.batch_size}.")
    limit = cfg.get("max_images")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"max_images must be a positive integer or null (all images), got {limit!r}.")
    out = writable_output(cfg.out, cfg.overwrite)
    pictures = {s: writable_output(out.with_name(f"{out.stem}_{s}.png"), cfg.overwrite) for s in SCORES}
    pl.seed_everything(cfg.seed, verbose=False)
    module = module_from(cfg.get("ckpt_path"), cfg.get("pretrained"), cfg.device)
    model = module.eval_model
    if model.conditional:
        raise ValueError(
            "this model is class-conditional: it gives p(x | y), not the p(x) that detection compares; use an "
            "unconditional one, e.g. pretrained=mnist5k_small or pretrained=fashion_mnist."
        )
    if module.hparams.n_bits is None:
        raise ValueError("iresnet-ood scores 8-bit images; this checkpoint models continuous data (points).")
    shape = image_shape(model)
    outliers, ood_name = ood_split(cfg, shape)
    if cfg.get("logdet"):
        model.set_logdet_estimator(instantiate(cfg.logdet))
    datamodule = checkpoint_datamodule(cfg, module)
    inliers = first(datamodule.split(cfg.split), limit)
    outliers = first(outliers, limit)
    in_name = f"{type(datamodule).__name__} {cfg.split}"
    start = time.perf_counter()
    n_typical = min(cfg.typical_images, limit or cfg.typical_images)
    typical = float(scored(module, first(datamodule.split("train"), n_typical), cfg).mean())
    bpd = {"in": scored(module, inliers, cfg), "ood": scored(module, outliers, cfg)}
    dims = int(np.prod(shape))
    scores = {
        side: ood_scores(bpd[side], compressed_bits(split.inputs, cfg.codec), dims, typical)
        for side, split in (("in", inliers), ("ood", outliers))
    }
    seconds = time.perf_counter() - start
    metrics = {s: detection_metrics(scores["in"][s], scores["ood"][s]) for s in SCORES}
    result = {
        "ckpt_path": cfg.get("ckpt_path"),
        "pretrained": cfg.get("pretrained"),
        "in_distribution": in_name,
        "ood": ood_name,
        "n_in": len(bpd["in"]),
        "n_ood": len(bpd["ood"]),
        "mean_bpd": {"in": float(bpd["in"].mean()), "ood": float(bpd["ood"].mean())},
        "typical_bpd": typical,
        "codec": cfg.codec,
        "draws": cfg.draws,
        "scores": metrics,
        "seconds": seconds,
    }
    print(f"in-distribution: {in_name} ({result['n_in']} images, mean {result['mean_bpd']['in']:.3f} bits/dim); "
          f"OOD: {ood_name} ({result['n_ood']} images, mean {result['mean_bpd']['ood']:.3f} bits/dim)")
    print(f"{'score':12s}{'AUROC':>8s}{'AUPR':>8s}{'FPR95':>8s}")
    for s, m in metrics.items():
        print(f"{s:12s}{m['auroc']:8.3f}{m['aupr']:8.3f}{m['fpr95']:8.3f}")
    for s, path in pictures.items():
        title = f"AUROC {metrics[s]['auroc']:.3f}"
        save_score_histogram(path, scores["in"][s], scores["ood"][s], s, (in_name, ood_name), title)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out} and its histograms {', '.join(Path(p).name for p in pictures.values())} ({seconds:.1f} s)")
    return result


main = hydra_command(detect, "ood")


if __name__ == "__main__":
    main()
