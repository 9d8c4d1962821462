"""Every experiment config composes and builds its model; short training runs on each data kind."""

import math
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate

from iresnet.cli.common import config_dir
from iresnet.cli.train import build_module, train

EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))
# Shrinks GPU-sized models so a CPU test can step them; the config structure stays the experiment's.
TINY = ["model.n_blocks=[1,1]", "model.hidden_channels=8"]


def test_the_listed_experiments_exist():
    assert {"mnist5k_small", "mnist_iresnet", "mnist_resflow", "fashion_mnist_resflow", "cifar10_iresnet",
            "cifar10_resflow", "toy2d"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_an_experiments_own_settings_win(experiment, compose_config):
    # Top-level keys of an experiment (temperature, seed, ...) override train.yaml's defaults.
    own = yaml.safe_load((Path(config_dir()) / "experiment" / f"{experiment}.yaml").read_text())
    cfg = compose_config("train", [f"experiment={experiment}"])
    for key, value in own.items():
        if key != "defaults" and not isinstance(value, dict):
            assert cfg[key] == value, key


# Each experiment's model as configured: its parameter count, and the shapes of a batch of two
# and of its code. The GPU-sized models take seconds to build and tens of seconds to run on a
# CPU, so they are in the slow lane.
MNIST, CIFAR, POINTS = (1, 28, 28), (3, 32, 32), (2,)
BUILT = {
    "cifar10_iresnet": (25_028_568, CIFAR),
    "cifar10_resflow": (25_174_129, CIFAR),
    "cifar10_resflow_small": (1_951_692, CIFAR),
    "fashion_mnist_resflow": (16_662_081, MNIST),
    "fashion_mnist_small": (558_660, MNIST),
    "mnist5k_bench": (580_689, MNIST),
    "mnist5k_conditional": (589_700, MNIST),
    "mnist5k_hybrid": (649_806, MNIST),
    "mnist5k_quality": (589_700, MNIST),
    "mnist5k_small": (558_660, MNIST),
    "mnist_iresnet": (25_028_568, CIFAR),  # padded to 32x32 and repeated to 3 channels, as the paper
    "mnist_resflow": (16_608_589, MNIST),
    "toy2d": (340_500, POINTS),
    "toy2d_conditional": (596_312, POINTS),
}
GPU_SIZED = {"cifar10_iresnet", "cifar10_resflow", "fashion_mnist_resflow", "mnist_iresnet", "mnist_resflow"}


def test_every_experiment_has_its_expected_model():
    assert set(BUILT) == set(EXPERIMENTS)


@pytest.mark.parametrize(
    "experiment", [pytest.param(e, marks=pytest.mark.slow) if e in GPU_SIZED else e for e in EXPERIMENTS]
)
def test_experiment_builds_its_model(experiment, compose_config, data_root):
    """The model an experiment trains: its parameter count, and a test batch through it."""
    # The fake archives hold a dozen training images, fewer than the default validation hold-out.
    holdout = [] if experiment.startswith("toy2d") else ["data.val_size=0", "data.batch_size=2"]
    cfg = compose_config("train", [f"experiment={experiment}", f"paths.data_dir={data_root}", *holdout])
    datamodule = instantiate(cfg.data)
    model = build_module(cfg, datamodule).model.eval()
    n_params, shape = BUILT[experiment]
    assert sum(p.numel() for p in model.parameters()) == n_params
    x, y = (t[:2] for t in next(iter(datamodule.test_dataloader())))
    assert x.shape == (2, *shape)
    with torch.no_grad():
        z, logdet = model(x, y if model.conditional else None)
        assert z.shape == (2, math.prod(shape)) and logdet.shape == (2,)
        if experiment == "mnist5k_hybrid":
            assert model.log_prob_and_logits(x)[2].shape == (2, 10)


@pytest.mark.parametrize(
    "experiment, extra",
    [
        ("mnist5k_small", ["model.n_blocks=[1,1]", "model.hidden_channels=8", "model.fc_blocks=1"]),
        ("toy2d", ["model.n_blocks=2", "model.hidden=16", "data.num_train=256", "data.batch_size=64"]),
        ("cifar10_resflow", TINY + ["data.val_size=0", "data.batch_size=4", "trainer=cpu"]),
        ("cifar10_iresnet", TINY + ["data.val_size=0", "data.batch_size=4", "trainer=cpu"]),
    ],
)
def test_fast_dev_run(experiment, extra, compose_config, data_root):
    cfg = compose_config(
        "train",
        [f"experiment={experiment}", f"paths.data_dir={data_root}", "+trainer.fast_dev_run=true", "~logger",
         *extra],
    )
    metrics = train(cfg)
    name = "nll" if experiment == "toy2d" else "bpd"
    assert math.isfinite(metrics[f"test/{name}"]) and abs(metrics[f"test/{name}"]) < 1e3
