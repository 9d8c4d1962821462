"""Turning raw uint8 image batches into dequantized float batches."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import RawBatch
from .dequantize import dequantize


def keyed_uniform(keys: Tensor, shape: tuple[int, ...], seed: int) -> Tensor:
    """``U[0, 1)`` noise ``(len(keys), *shape)``; row ``i`` depends only on ``(seed, keys[i])``.

    Evaluation noise keyed to each image's index is identical across epochs, batch sizes,
    shuffling and worker processes, so reported bits/dim are reproducible.
    """
    out = torch.empty(len(keys), *shape)
    generator = torch.Generator()
    for row, key in zip(out, keys.tolist()):
        # The CPU generator keeps only the low 32 bits of a seed; the golden-ratio stride puts
        # the key ranges of nearby seeds far apart in that space (1.6e9 for consecutive ones).
        generator.manual_seed((seed * 0x9E3779B9 + key) % 2**32)
        torch.rand(shape, generator=generator, out=row)
    return out


def random_crops(x: Tensor, padding: int) -> Tensor:
    """Each image of ``x: (B, C, H, W)`` padded by ``padding`` mirrored pixels, then cropped back to
    ``H x W`` at a random offset (the global generator: training noise)."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x.float(), (padding,) * 4, mode="reflect").to(x.dtype)
    offsets = torch.randint(0, 2 * padding + 1, (b, 2))
    return torch.stack([img[:, i : i + h, j : j + w] for img, (i, j) in zip(padded, offsets.tolist())])


class DequantizeCollate:
    """Collate ``(x uint8 (B, C, H, W), y (B,), index (B,))`` into ``(x float32 in [0, 1), y)``.

    Args:
        n_bits: bit depth kept by the dequantization.
        hflip: flip each image horizontally with probability 1/2 (training augmentation).
        crop_padding: random crops of the images padded by this many mirrored pixels (0: none).
        seed: None draws fresh noise from the global RNG (training: seeded by Lightning and
            distinct per worker); an int keys the noise to ``(seed, index)`` (evaluation).
    """

    def __init__(self, n_bits: int = 8, hflip: bool = False, seed: int | None = None, crop_padding: int = 0) -> None:
        self.n_bits = n_bits
        self.hflip = hflip
        self.seed = seed
        self.crop_padding = crop_padding

    def __call__(self, batch: RawBatch) -> tuple[Tensor, Tensor]:
        x, y, index = batch
        if self.crop_padding:
            x = random_crops(x, self.crop_padding)
        if self.hflip:
            flip = torch.rand(len(x)) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        noise = None if self.seed is None else keyed_uniform(index, tuple(x.shape[1:]), self.seed)
        return dequantize(x, self.n_bits, noise=noise), y
