"""Shared fixtures: composing the Hydra configs as the console scripts do, one trained run for the
whole session, tiny fake datasets."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from fakedata import write_cifar10_batches, write_mnist_idx
from reliability import TINY

from iresnet.cli.compose import compose_config as compose

# Two cores shared by torch's intra-op pool and the test process: one thread is faster for the
# small tensors of the test suite and keeps timings stable.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def classifier_cache(tmp_path_factory) -> Path:
    """One cache of sample-quality classifiers for the session (and its subprocesses), never the user's."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["IRESNET_CACHE"] = str(path)
    return path


@pytest.fixture
def compose_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """``compose_config(name, overrides)`` -> the config a console script would get, its run
    directory ``tmp_path / "run"`` (:func:`iresnet.cli.compose.compose_config`)."""
    return lambda name, overrides=(): compose(name, overrides, output_dir=tmp_path / "run")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The run directory of the tiny model trained for 4 steps on mnist5k at temperature 0.8,
    logged, tested and sampled as ``iresnet-train`` does. Shared by the session: read it, never
    modify it."""
    from iresnet.cli.train import train

    run = tmp_path_factory.mktemp("tiny") / "run"
    overrides = [*TINY, "trainer.limit_train_batches=4", "trainer.max_epochs=1", "temperature=0.8"]
    metrics = train(compose("train", overrides, output_dir=run))
    assert metrics["test/bpd"] < 20
    return run


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_run) -> Path:
    """The tiny run's ``last.ckpt`` (shared: read, never modify)."""
    return tiny_run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def stiff_ckpt(tiny_ckpt) -> Path:
    """The tiny checkpoint with raw weights x50, so every normalized layer sits at sigma = coeff and
    inverting a block takes several fixed-point iterations (4 training steps leave g near 0)."""
    data = torch.load(tiny_ckpt, weights_only=True)
    for key, value in data["state_dict"].items():
        if key.endswith("weight.original"):
            value.mul_(50)
    path = tiny_ckpt.with_name("stiff.ckpt")
    torch.save(data, path)
    return path


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """Tiny CIFAR-10, MNIST and Fashion-MNIST files in their own formats, for the real loaders."""
    root = tmp_path / "data"
    write_cifar10_batches(root / "cifar-10-batches-py")
    write_mnist_idx(root / "MNIST" / "raw", gz=False)
    write_mnist_idx(root / "FashionMNIST" / "raw", gz=True)
    return root
