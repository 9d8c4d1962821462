"""Shared fixtures: composing the Hydra configs exactly as the console scripts do."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from fakedata import write_cifar10_batches, write_mnist_idx

from iresnet.cli.common import config_dir

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
    """``compose_config(name, overrides)`` -> the config a console script would get, run dir in tmp."""

    def _compose(name: str, overrides: list[str] = ()) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(name, overrides=[*overrides], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """Tiny CIFAR-10, MNIST and Fashion-MNIST files in their own formats, for the real loaders."""
    root = tmp_path / "data"
    write_cifar10_batches(root / "cifar-10-batches-py")
    write_mnist_idx(root / "MNIST" / "raw", gz=False)
    write_mnist_idx(root / "FashionMNIST" / "raw", gz=True)
    return root
