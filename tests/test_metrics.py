"""bits_per_dim against code lengths worked out by hand, and mean +- standard error."""

import math

import pytest
import torch

from iresnet.metrics import bits_per_dim, mean_and_standard_error


def test_uniform_density_costs_exactly_the_bit_depth():
    # The uniform density on [0, 1)^D gives every one of the K bins mass 1/K: log2 K bits each.
    log_p = torch.zeros(3)
    assert torch.allclose(bits_per_dim(log_p, num_dims=784), torch.full((3,), 8.0))
    assert torch.allclose(bits_per_dim(log_p, num_dims=784, n_bins=32), torch.full((3,), 5.0))


def test_gaussian_matches_per_pixel_code_lengths():
    # x ~ N(0, sigma^2 I) in D = 3 dims; a bin of width 1/256 around x_i has mass about
    # pdf(x_i) / 256, so coding pixel i costs -log2(pdf(x_i) / 256) bits; bpd is their mean.
    sigma, x = 0.5, [0.1, 0.2, 0.3]
    pdfs = [math.exp(-xi**2 / (2 * sigma**2)) / math.sqrt(2 * math.pi * sigma**2) for xi in x]
    expected = sum(-math.log2(p / 256) for p in pdfs) / len(x)
    log_p = torch.tensor([sum(math.log(p) for p in pdfs)], dtype=torch.float64)
    assert bits_per_dim(log_p, num_dims=3).item() == pytest.approx(expected, rel=1e-12)


def test_identity_flow_under_known_gaussian():
    # Identity flow (logdet 0) with base N(1/2, 1/(2 pi)) per dim: the density is exactly 1 at
    # the mean, and exp(-1) one sqrt(2)*sigma further out (log p = -1 nat = 1/ln 2 bits).
    sigma = 1 / math.sqrt(2 * math.pi)
    base = torch.distributions.Normal(torch.tensor(0.5, dtype=torch.float64), sigma)
    x = torch.tensor([[0.5, 0.5], [0.5, 0.5 + math.sqrt(2) * sigma]], dtype=torch.float64)
    z, logdet = x, torch.zeros(2, dtype=torch.float64)
    log_p = base.log_prob(z).sum(1) + logdet
    bpd = bits_per_dim(log_p, num_dims=2)
    # One of the two pixels costs 8 + 1/ln 2 bits instead of 8.
    assert bpd.tolist() == pytest.approx([8.0, 8.0 + 0.5 / math.log(2)], rel=1e-12)


def test_bits_per_dim_is_elementwise():
    log_p = torch.tensor([0.0, -10.0, 5.0])
    bpd = bits_per_dim(log_p, num_dims=10)
    assert bpd.shape == (3,)
    assert bpd[1] > bpd[0] > bpd[2]


def test_mean_and_standard_error_by_hand():
    mean, se = mean_and_standard_error(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    # Unbiased variance: (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; se = sqrt(5/3) / sqrt(4).
    assert mean == pytest.approx(2.5)
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)
    assert mean_and_standard_error([3.0, 3.0, 3.0]) == (3.0, 0.0)


def test_mean_and_standard_error_edge_cases():
    mean, se = mean_and_standard_error([7.0])
    assert mean == 7.0 and math.isnan(se)
    with pytest.raises(ValueError, match="at least one"):
        mean_and_standard_error([])
