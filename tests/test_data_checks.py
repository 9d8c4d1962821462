"""check_images names the problem and the fix; to_unit_interval rescales to [0, 1]."""

import pytest
import torch

from iresnet.data import check_images, to_unit_interval

SHAPE = (1, 28, 28)


def test_valid_images_pass():
    check_images(torch.rand(2, *SHAPE), SHAPE)
    check_images(torch.randint(0, 256, SHAPE, dtype=torch.uint8), SHAPE)  # one (C, H, W) image
    check_images(torch.randint(0, 256, (2, *SHAPE)).float(), SHAPE)  # 0..255 stored as floats


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.tensor(float("nan")).expand(2, *SHAPE), "NaN or Inf"),
        (torch.full((2, *SHAPE), float("inf")), "NaN or Inf"),
        (torch.full((2, *SHAPE), -0.5), "rescale"),
        (torch.full((2, *SHAPE), 2.5), "rescale"),  # neither [0, 1] nor whole 0..255
        (torch.full((2, *SHAPE), 256), "rescale"),
        (torch.rand(2, 3, 28, 28), "expected 1 channel"),
        (torch.rand(2, 28, 28, 1), "expected 1 channel"),  # channels last
        (torch.rand(2, 1, 32, 32), "expected 28x28 images, got 32x32; resize"),
        (torch.rand(28, 28), r"\(B, C, H, W\)"),
    ],
)
def test_invalid_images_raise(x, match):
    with pytest.raises(ValueError, match=match) as info:
        check_images(x, SHAPE, where="my_images.pt")
    assert "my_images.pt" in str(info.value)


def test_to_unit_interval():
    ints = torch.tensor([[[0, 51, 255]]], dtype=torch.uint8)
    expected = torch.tensor([[[0.0, 0.2, 1.0]]])
    assert torch.allclose(to_unit_interval(ints), expected)
    assert torch.allclose(to_unit_interval(ints.float()), expected)
    assert torch.allclose(to_unit_interval(ints.long()), expected)
    unit = torch.rand(1, 2, 2, dtype=torch.float64)
    assert to_unit_interval(unit).dtype == torch.float32
    assert torch.allclose(to_unit_interval(unit), unit.float())
    with pytest.raises(ValueError, match="NaN"):
        to_unit_interval(torch.full((1, 2, 2), float("nan")))
