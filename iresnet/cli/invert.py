"""``iresnet-invert ckpt_path=... n=16 [images=path] out=reconstructions.png``: encode, invert, compare."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from iresnet.cli.common import checkpoint_datamodule, class_labels, hydra_command, require_converged, writable_output
from iresnet.cli.images import image_shape, read_images
from iresnet.data import to_unit_interval
from iresnet.pretrained_models import module_from
from iresnet.visualize import save_reconstruction_grid


def first_images(datamodule, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` (dequantized) images of ``split`` and their labels: ``(n, C, H, W)``, ``(n, ...)``."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}.")
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    images, labels, count = [], [], 0
    for x, y in loader:
        images.append(x)
        labels.append(y)
        count += len(x)
        if count >= n:
            break
    return torch.cat(images)[:n], torch.cat(labels)[:n]


def invert(cfg: DictConfig) -> float:
    """Encodes ``n`` images (of ``split``, or of ``images``), inverts the codes, writes the pairs.

    Returns the max-abs error. Nothing is written unless every block's inverse converged.
    """
    if cfg.n < 1:
        raise ValueError(f"n must be a positive number of images, got {cfg.n}.")
    out = writable_output(cfg.out, cfg.overwrite)
    module = module_from(cfg.get("ckpt_path"), cfg.get("pretrained"), cfg.device)
    model = module.prepare_eval_model()
    if cfg.get("max_iter") is not None:
        if not isinstance(cfg.max_iter, int) or cfg.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {cfg.max_iter!r}.")
        for block in model.residual_blocks():
            block.solver.max_iter = cfg.max_iter
    if cfg.get("images"):
        x = to_unit_interval(read_images(cfg.images, image_shape(model))[: cfg.n])
        if model.conditional and cfg.get("label") in (None, "all"):
            raise ValueError("images= with a class-conditional checkpoint needs the images' class: pass label=<class>.")
        context, _ = class_labels(model, cfg.get("label"), len(x))
    else:
        x, y = first_images(checkpoint_datamodule(cfg, module), cfg.split, cfg.n)
        context = y.to(cfg.device) if model.conditional else None
    x = x.to(cfg.device)
    reconstruction = model.reconstruct(x, context)
    require_converged(model)
    error = float((reconstruction - x).abs().max())
    stats = [b.last_inverse_stats for b in model.residual_blocks() if b.last_inverse_stats is not None]
    iters = max((s.iterations for s in stats), default=0)
    if x.dim() == 4:
        save_reconstruction_grid(x, reconstruction, out)
        print(f"wrote originals and reconstructions of {len(x)} images to {out}")
    print(f"max-abs reconstruction error: {error:.3e} (at most {iters} fixed-point iterations per block)")
    return error


main = hydra_command(invert, "invert")


if __name__ == "__main__":
    main()
