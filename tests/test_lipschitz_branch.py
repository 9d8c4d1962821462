"""A residual branch of normalized layers and 1-Lipschitz activations obeys the product bound."""

import math

import torch
from torch import nn

from iresnet.lipschitz import CLipSwish, LipSwish, exact_spectral_norm, spectral_norm, update_spectral_norms


def test_branch_lipschitz_below_product_of_coeffs():
    torch.manual_seed(0)
    coeffs = (0.9, 0.8, 0.95, 0.7)
    shape = (3, 6, 6)
    branch = nn.Sequential(
        spectral_norm(nn.Conv2d(3, 8, 3, padding=1), coeff=coeffs[0], input_shape=shape),
        LipSwish(8),
        spectral_norm(nn.Conv2d(8, 4, 1), coeff=coeffs[1]),
        CLipSwish(4),
        spectral_norm(nn.Conv2d(8, 8, 3, padding=1), coeff=coeffs[2], input_shape=(8, 6, 6)),
        nn.ELU(),
        spectral_norm(nn.Conv2d(8, 3, 3, padding=1), coeff=coeffs[3], input_shape=(8, 6, 6)),
    )
    with torch.no_grad():
        for layer in branch[::2]:
            layer.parametrizations.weight.original.mul_(5.0)  # every layer must be rescaled
    update_spectral_norms(branch)
    branch.eval()
    assert exact_spectral_norm(branch[0], shape) <= coeffs[0] * (1 + 1e-3)

    bound = math.prod(coeffs) * (1 + 1e-3)
    with torch.no_grad():
        x = torch.randn(64, *shape)
        # Nearby pairs probe the local slope, far pairs the global one.
        for scale in (1e-3, 1.0):
            y = x + scale * torch.randn_like(x)
            ratio = (branch(x) - branch(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
            assert ratio.max() <= bound
