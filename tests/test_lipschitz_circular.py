"""FFT singular values of circular convolutions against a dense SVD."""

import pytest
import torch
import torch.nn.functional as F

from iresnet.lipschitz import circular_conv_spectral_norm, conv_singular_values_fft


def _dense_circular_singular_values(weight: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    c_in, k = weight.shape[1], weight.shape[-1]
    n = c_in * input_hw[0] * input_hw[1]
    basis = torch.eye(n, dtype=weight.dtype).reshape(n, c_in, *input_hw)
    pad = (k - 1) // 2
    columns = F.conv2d(F.pad(basis, (pad, pad, pad, pad), mode="circular"), weight)
    return torch.linalg.svdvals(columns.reshape(n, -1))


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("c_out, c_in", [(2, 3), (3, 2), (2, 2)])
def test_fft_matches_dense_svd(kernel_size, c_out, c_in):
    torch.manual_seed(kernel_size * 10 + c_out)
    weight = torch.randn(c_out, c_in, kernel_size, kernel_size, dtype=torch.float64)
    input_hw = (5, 6)
    fft = conv_singular_values_fft(weight, input_hw)
    assert fft.shape == (5, 6, min(c_out, c_in))
    dense = _dense_circular_singular_values(weight, input_hw)
    # The dense matrix has max(c_out, c_in) * H * W singular values; the extra ones are zero.
    torch.testing.assert_close(fft.flatten().sort(descending=True).values, dense[: fft.numel()])
    torch.testing.assert_close(dense[fft.numel():], torch.zeros_like(dense[fft.numel():]), atol=1e-10, rtol=0)
    torch.testing.assert_close(circular_conv_spectral_norm(weight, input_hw), dense[0])


def test_kernel_larger_than_input_is_rejected():
    with pytest.raises(ValueError, match="kh <= H"):
        conv_singular_values_fft(torch.randn(2, 2, 5, 5), (3, 3))
