r"""The three out-of-distribution scores of an image ``x`` under a density model (higher: more anomalous).

With ``D`` dimensions and ``b(x)`` the model's bits/dim (``-log2 p(x) = D b(x)`` bits):

- ``nll``: ``D b(x)``, the negative log-likelihood in bits. It fails in a known way: a model of
  Fashion-MNIST gives MNIST digits *higher* likelihood than its own test images (Nalisnick et al.
  2019), because simple images (large uniform backgrounds) are likely under any such model.
- ``complexity``: ``D b(x) - L(x)`` with ``L(x)`` the length in bits of ``x`` compressed by a
  standard lossless codec (PNG): Serrà et al. (2020)'s ``S(x)``, the model's code length against a
  generic compressor's, which removes what the likelihood owes to the image's plain complexity.
- ``typicality``: ``|b(x) - b_typ|`` with ``b_typ`` the mean bits/dim of training images, the
  per-image form of the typicality test (Nalisnick et al. 2019b): an image can be atypical by
  being too likely as well as too unlikely.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import Tensor

SCORES = ("nll", "complexity", "typicality")
CODECS = ("png", "zlib")


def compressed_bits(images: Tensor, codec: str = "png") -> np.ndarray:
    """The length in bits of each 8-bit image ``(N, C, H, W)`` compressed losslessly: ``(N,)``.

    ``png``: a PNG file at compression level 9 (its fixed headers add the same count to every
    image of one shape); ``zlib``: the raw pixels deflated at level 9. Floats in [0, 1] are
    rounded to the 8-bit levels first.
    """
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}.")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}.")
    pixels = (images * 255).round().to(torch.uint8) if images.is_floating_point() else images.to(torch.uint8)
    pixels = pixels.cpu().contiguous()
    if codec == "zlib":
        return np.array([8 * len(zlib.compress(x.numpy().tobytes(), 9)) for x in pixels], dtype=np.float64)
    from torchvision.io import encode_png

    return np.array([8 * encode_png(x, compression_level=9).numel() for x in pixels], dtype=np.float64)


def ood_scores(bits_per_dim: Tensor | np.ndarray, complexity: np.ndarray, dims: int, typical_bpd: float) -> dict[str, np.ndarray]:
    """``{"nll", "complexity", "typicality"}`` of images with bits/dim ``bits_per_dim`` ``(N,)`` and
    compressed lengths ``complexity`` ``(N,)`` in bits (:func:`compressed_bits`), for a model of
    ``dims`` dimensions whose training images average ``typical_bpd`` bits/dim."""
    bpd = np.asarray(bits_per_dim.detach().cpu() if isinstance(bits_per_dim, Tensor) else bits_per_dim, np.float64)
    complexity = np.asarray(complexity, np.float64)
    if bpd.shape != complexity.shape:
        raise ValueError(f"bits_per_dim {bpd.shape} and complexity {complexity.shape} must hold one value per image.")
    nll = bpd * dims
    return {"nll": nll, "complexity": nll - complexity, "typicality": np.abs(bpd - typical_bpd)}
