"""``iresnet-sample ckpt_path=... n=64 temperature=1.0 [label=3|all] out=samples.png``."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from iresnet.cli.common import class_labels, hydra_command, require_converged, writable_output
from iresnet.training.checkpoint import load_module
from iresnet.visualize import save_image_grid, save_points_plot


def sample(cfg: DictConfig) -> torch.Tensor:
    """Draws ``n`` samples from the checkpoint's EMA model and writes them as a PNG.

    A class-conditional model draws ``n`` of class ``label``, or with ``label=all`` (its
    default) ``n`` of every class, one row per class.
    """
    if cfg.n < 1:
        raise ValueError(f"n must be a positive number of samples, got {cfg.n}.")
    if cfg.temperature <= 0:
        raise ValueError(f"temperature must be positive, got {cfg.temperature}.")
    out = writable_output(cfg.out, cfg.overwrite)
    module = load_module(cfg.ckpt_path, cfg.device)
    model = module.prepare_eval_model()
    labels, per_row = class_labels(model, cfg.get("label"), cfg.n)
    if labels is None and model.conditional:
        raise ValueError(
            "this checkpoint's model is conditioned on features, which iresnet-sample cannot choose; sample it from "
            "Python with model.sample(n, context)."
        )
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    n = cfg.n if labels is None else len(labels)
    samples = model.sample(n, labels, cfg.temperature, generator=generator)
    require_converged(model)
    if samples.dim() == 2:
        save_points_plot(samples, out, f"{n} samples, T={cfg.temperature}")
    else:
        save_image_grid(samples, out, nrow=cfg.nrow or per_row)
    which = "" if labels is None else f" of class {cfg.label}" if per_row is None else ", one row per class"
    print(f"wrote {n} samples{which} (temperature {cfg.temperature}) to {out}")
    return samples


main = hydra_command(sample, "sample")


if __name__ == "__main__":
    main()
