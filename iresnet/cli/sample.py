"""``iresnet-sample ckpt_path=... n=64 temperature=1.0 out=samples.png``."""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from iresnet.cli.common import (
    apply_runtime_config, config_dir, exit_on_user_error, require_converged, writable_output,
)  # fmt: skip
from iresnet.training.checkpoint import load_module
from iresnet.visualize import save_image_grid, save_points_plot


def sample(cfg: DictConfig) -> torch.Tensor:
    """Draws ``n`` samples from the checkpoint's EMA model and writes them as a PNG."""
    if cfg.n < 1:
        raise ValueError(f"n must be a positive number of samples, got {cfg.n}.")
    if cfg.temperature <= 0:
        raise ValueError(f"temperature must be positive, got {cfg.temperature}.")
    out = writable_output(cfg.out, cfg.overwrite)
    module = load_module(cfg.ckpt_path, cfg.device)
    model = module.prepare_eval_model()
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    samples = model.sample(cfg.n, cfg.temperature, generator=generator)
    require_converged(model)
    if samples.dim() == 2:
        save_points_plot(samples, out, f"{cfg.n} samples, T={cfg.temperature}")
    else:
        save_image_grid(samples, out, nrow=cfg.nrow)
    print(f"wrote {cfg.n} samples (temperature {cfg.temperature}) to {out}")
    return samples


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    apply_runtime_config(cfg)
    sample(cfg)


if __name__ == "__main__":
    main()
