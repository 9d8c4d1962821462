"""2-D toy samplers and their datamodule."""

import pytest
import torch

from iresnet.data import TOY_SAMPLERS, Toy2dDataModule, sample_toy2d

NAMES = ["moons", "8gaussians", "checkerboard", "pinwheel", "2spirals"]


def test_every_standard_name_is_registered():
    assert sorted(TOY_SAMPLERS) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_sampler_shapes_and_values(name):
    g = torch.Generator().manual_seed(0)
    x = sample_toy2d(name, 2001, generator=g)
    assert x.shape == (2001, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.abs().max() < 6  # roughly within [-4, 4]
    assert x.std(0).min() > 0.5  # spread out, not collapsed
    assert sample_toy2d(name, 0).shape == (0, 2)
    again = sample_toy2d(name, 2001, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_checkerboard_fills_only_black_squares():
    x = sample_toy2d("checkerboard", 1000, torch.Generator().manual_seed(0))
    squares = torch.floor(x / 2)
    assert ((squares[:, 0] + squares[:, 1]) % 2 == 0).all()


def test_eight_gaussians_has_eight_modes_on_a_circle():
    x = sample_toy2d("8gaussians", 4000, torch.Generator().manual_seed(0))
    assert x.norm(dim=1).median() == pytest.approx(4 / 1.414, abs=0.1)
    angles = torch.atan2(x[:, 1], x[:, 0])
    modes = torch.round(angles / (torch.pi / 4)) % 8
    assert torch.bincount(modes.long(), minlength=8).min() > 400


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="choose one of.*8gaussians.*pinwheel"):
        sample_toy2d("swissroll", 10)
    with pytest.raises(ValueError, match="choose one of"):
        Toy2dDataModule(name="swissroll")


def test_datamodule():
    dm = Toy2dDataModule(name="moons", num_train=300, num_val=50, num_test=70, batch_size=64)
    assert dm.dims == (2,) and dm.n_bins is None and dm.num_train == 300
    batches = list(dm.train_dataloader())
    assert len(batches) == 300 // 64
    x, y = batches[0]
    assert x.shape == (64, 2) and x.dtype == torch.float32
    assert y.dtype == torch.long and set(y.tolist()) == {0, 1}  # which moon
    one_hot = Toy2dDataModule(name="moons", num_train=300, num_val=50, num_test=70, batch_size=64, context=True)
    x_c, y_c = one_hot.split("train")
    assert torch.equal(x_c, dm.split("train").inputs)  # the same points
    assert y_c.dtype == torch.float32 and torch.equal(y_c.argmax(1), dm.split("train").labels)
    assert sum(len(x) for x, _ in dm.val_dataloader()) == 50
    assert sum(len(x) for x, _ in dm.test_dataloader()) == 70
    # Seeded, and each split has its own stream: resizing train leaves test unchanged.
    bigger = Toy2dDataModule(name="moons", num_train=400, num_val=50, num_test=70, seed=0)
    assert torch.equal(dm.split("test").inputs, bigger.split("test").inputs)
    other_seed = Toy2dDataModule(name="moons", num_train=300, num_val=50, num_test=70, seed=1)
    assert not torch.equal(dm.split("test").inputs, other_seed.split("test").inputs)


def test_datamodule_size_errors():
    with pytest.raises(ValueError, match=r"batch_size=64 exceeds the 10 training"):
        Toy2dDataModule(num_train=10, batch_size=64).setup()
    with pytest.raises(ValueError, match="test split is empty"):
        Toy2dDataModule(num_test=0).setup()
    assert len(Toy2dDataModule(num_val=0).val_dataloader()) == 0  # no validation, which is allowed
