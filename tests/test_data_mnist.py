"""MNIST / Fashion-MNIST from tiny IDX files in torchvision's, a plain and Debian's layout."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fakedata import MNIST_SIZES, write_idx, write_mnist_idx

import iresnet.data.mnist as mnist_module
from iresnet.data import DatasetNotFoundError, FashionMNISTDataModule, MNISTDataModule, read_idx

SIZES = MNIST_SIZES


@pytest.fixture
def no_debian_dir(tmp_path, monkeypatch):
    missing = tmp_path / "no-debian"
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST_DIR", missing)
    return missing


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte", array, gz)
    values = read_idx(tmp_path / ("a-idx3-ubyte.gz" if gz else "a-idx3-ubyte"))
    assert values.dtype == torch.uint8 and torch.equal(values, torch.from_numpy(array))


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((2, 2), np.uint8), gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def _check_loaded(dm, written, val_size):
    assert dm.dims == (1, 28, 28) and dm.num_train == SIZES["train"] - val_size
    test = dm.split("test")
    assert torch.equal(test.inputs, written["t10k"][0])
    assert torch.equal(test.labels, written["t10k"][1])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (dm.batch_size, 1, 28, 28) and 0 <= x.min() and x.max() < 1


def test_mnist_torchvision_raw_layout(tmp_path):
    written = write_mnist_idx(tmp_path / "MNIST" / "raw", gz=False)
    _check_loaded(MNISTDataModule(root=str(tmp_path), batch_size=4, val_size=2), written, 2)


def test_fashion_torchvision_raw_layout_gz(tmp_path, no_debian_dir):
    written = write_mnist_idx(tmp_path / "FashionMNIST" / "raw", gz=True)
    _check_loaded(FashionMNISTDataModule(root=str(tmp_path), batch_size=4, val_size=0), written, 0)


def test_fashion_debian_folder_as_root(tmp_path, no_debian_dir):
    written = write_mnist_idx(tmp_path / "fashion-mnist", gz=True)
    dm = FashionMNISTDataModule(root=str(tmp_path / "fashion-mnist"), batch_size=4, val_size=3)
    _check_loaded(dm, written, 3)


def test_fashion_found_in_debian_default_dir(tmp_path, monkeypatch):
    debian_dir = tmp_path / "usr-share-datasets-fashion-mnist"
    written = write_mnist_idx(debian_dir, gz=True)
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST_DIR", debian_dir)
    dm = FashionMNISTDataModule(root=str(tmp_path / "empty"), batch_size=4, val_size=2)
    _check_loaded(dm, written, 2)


def test_missing_fashion_lists_places_and_fixes(tmp_path, no_debian_dir):
    with pytest.raises(DatasetNotFoundError) as info:
        FashionMNISTDataModule(root=str(tmp_path))
    message = str(info.value)
    for place in (tmp_path / "FashionMNIST" / "raw", tmp_path, no_debian_dir):
        assert f"  - {place}\n" in message
    assert "train-images-idx3-ubyte" in message
    assert "data.root=/path/to/data" in message and "data.download=true" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_missing_mnist_has_no_debian_hint(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        MNISTDataModule(root=str(tmp_path))
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)
    assert "apt-get" not in str(info.value)


def test_incomplete_folder_is_not_accepted(tmp_path):
    write_mnist_idx(tmp_path / "MNIST" / "raw", gz=False)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError):
        MNISTDataModule(root=str(tmp_path))


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_debian_fashion_mnist():
    dm = FashionMNISTDataModule(root="/nonexistent")
    assert dm.num_train == 55_000 and len(dm.split("test").labels) == 10_000
