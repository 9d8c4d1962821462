"""CIFAR-10 from a small archive written here in CIFAR-10's own python format."""

import tarfile

import pytest
import torch

from fakedata import write_cifar10_batches

from iresnet.data import CIFAR10DataModule, DatasetNotFoundError

NUM_TRAIN = 14


def _train_images(written):
    return torch.cat([written[f"data_batch_{i}"][0] for i in range(1, 6)])


@pytest.fixture
def extracted(tmp_path):
    return tmp_path, write_cifar10_batches(tmp_path / "cifar-10-batches-py")


def _bins(x):
    return torch.floor(x * 256).to(torch.uint8)


def test_loads_extracted_folder(extracted):
    root, written = extracted
    dm = CIFAR10DataModule(root=str(root), batch_size=2, val_size=0)
    assert dm.num_train == NUM_TRAIN and dm.dims == (3, 32, 32) and dm.n_bins == 256
    assert torch.equal(dm.split("train").inputs, _train_images(written))
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(_bins(x), written["test_batch"][0][:2])
    assert torch.equal(y, written["test_batch"][1][:2])


def test_root_may_be_the_batch_folder_itself(extracted):
    root, _ = extracted
    dm = CIFAR10DataModule(root=str(root / "cifar-10-batches-py"), batch_size=2, val_size=4)
    assert dm.num_train == NUM_TRAIN - 4


def test_extracts_the_archive_once(tmp_path):
    written = write_cifar10_batches(tmp_path / "src" / "cifar-10-batches-py")
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    dm = CIFAR10DataModule(root=str(root), batch_size=2, val_size=0)
    dm.prepare_data()
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert torch.equal(dm.split("train").inputs, _train_images(written))
    assert torch.equal(dm.split("test").labels, written["test_batch"][1])


def test_horizontal_flips_only_in_training(extracted):
    root, written = extracted
    torch.manual_seed(0)
    dm = CIFAR10DataModule(root=str(root), batch_size=NUM_TRAIN, val_size=0)  # hflip default
    originals = _train_images(written)
    n_flipped = 0
    for _ in range(3):
        x, _ = next(iter(dm.train_dataloader()))
        for image in _bins(x):
            flipped = (image == originals.flip(-1)).flatten(1).all(1).any()
            assert flipped or (image == originals).flatten(1).all(1).any()
            n_flipped += int(flipped)
    assert 0 < n_flipped < 3 * NUM_TRAIN
    x = torch.cat([x for x, _ in dm.test_dataloader()])
    assert torch.equal(_bins(x), written["test_batch"][0])  # never flipped
    no_flip = CIFAR10DataModule(root=str(root), batch_size=NUM_TRAIN, val_size=0, hflip=False)
    x, _ = next(iter(no_flip.train_dataloader()))
    assert torch.equal(_bins(x).sort(0).values, originals.sort(0).values)


def test_missing_data_lists_places_and_fixes(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10DataModule(root=str(tmp_path))
    message = str(info.value)
    for place in (tmp_path / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz"):
        assert str(place) in message
    assert "data.root=" in message and "data.download=true" in message
    assert isinstance(info.value, FileNotFoundError)
    CIFAR10DataModule(root=str(tmp_path), download=True)  # fetched later, in prepare_data
