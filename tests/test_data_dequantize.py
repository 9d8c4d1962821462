"""Uniform dequantization lands every pixel inside its own bin, at 8 and 5 bits."""

import pytest
import torch

from iresnet.data import DequantizeCollate, dequantize, to_bins

LEVELS = torch.arange(256, dtype=torch.uint8).repeat(40)  # every 8-bit level, 40 times


def test_8_bit_bins():
    g = torch.Generator().manual_seed(0)
    x = dequantize(LEVELS, generator=g)
    assert x.dtype == torch.float32 and x.shape == LEVELS.shape
    assert 0 <= x.min() and x.max() < 1
    assert torch.equal(torch.floor(x * 256).to(torch.uint8), LEVELS)
    frac = x * 256 - LEVELS
    assert frac.min() >= 0 and frac.max() < 1 and frac.std() > 0.2  # noise fills the bin


def test_5_bit_bins():
    g = torch.Generator().manual_seed(0)
    x = dequantize(LEVELS, n_bits=5, generator=g)
    x_int = LEVELS // 8  # floor(x / 2**(8 - 5))
    assert torch.equal(to_bins(LEVELS, 5), x_int) and int(x_int.max()) == 31
    assert torch.equal(torch.floor(x * 32).to(torch.uint8), x_int)
    assert 0 <= x.min() and x.max() < 1


def test_float_images_on_the_8_bit_grid_match_uint8():
    as_float = LEVELS.float() / 255
    for n_bits in (8, 5, 1):
        assert torch.equal(to_bins(as_float, n_bits), to_bins(LEVELS, n_bits))
    assert torch.equal(to_bins(LEVELS.long()), LEVELS)


def test_noise_next_to_one_stays_in_its_bin():
    # In float32, 255 + (1 - 2**-24) rounds to 256: the value must still stay below 1.
    noise = torch.full(LEVELS.shape, 1 - 2**-24)
    x = dequantize(LEVELS, noise=noise)
    assert x.max() < 1
    assert torch.equal(torch.floor(x * 256).to(torch.uint8), LEVELS)


def test_seeded_generator_is_reproducible():
    a = dequantize(LEVELS, generator=torch.Generator().manual_seed(3))
    b = dequantize(LEVELS, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "x, n_bits, match",
    [
        (torch.tensor([0.5, 1.5]), 8, r"\[0, 1\]"),
        (torch.tensor([-1, 3]), 8, "0..255"),
        (torch.tensor([0, 300]), 8, "0..255"),
        (LEVELS, 0, "n_bits"),
        (LEVELS, 9, "n_bits"),
    ],
)
def test_invalid_inputs(x, n_bits, match):
    with pytest.raises(ValueError, match=match):
        dequantize(x, n_bits=n_bits)


def _raw_batch(n=10):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 4, 5), dtype=torch.uint8, generator=g)
    return images, torch.arange(n), torch.arange(n)


def test_eval_collate_noise_is_keyed_to_image_index():
    images, labels, index = _raw_batch()
    collate = DequantizeCollate(seed=7)
    full, y = collate((images, labels, index))
    part, _ = collate((images[5:], labels[5:], index[5:]))  # another batch composition
    assert torch.equal(full[5:], part)
    assert torch.equal(y, labels)
    assert not torch.equal(full, DequantizeCollate(seed=8)((images, labels, index))[0])
    assert torch.equal(torch.floor(full * 256).to(torch.uint8), images)


def test_train_collate_flips_some_images_horizontally():
    images, labels, index = _raw_batch(64)
    torch.manual_seed(0)
    x, _ = DequantizeCollate(hflip=True)((images, labels, index))
    bins = torch.floor(x * 256).to(torch.uint8)
    same = (bins == images).flatten(1).all(1)
    flipped = (bins == images.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all()
    assert same.any() and flipped.any()
