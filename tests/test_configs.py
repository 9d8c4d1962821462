"""Every experiment config composes and instantiates; short training runs on each data kind."""

from pathlib import Path

import pytest
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


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, compose_config, data_root):
    # The fake archives hold a dozen training images, fewer than the default validation hold-out.
    holdout = [] if experiment.startswith("toy2d") else ["data.val_size=0"]
    cfg = compose_config("train", [f"experiment={experiment}", f"paths.data_dir={data_root}", *holdout])
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    assert module.model.log_prob is not None
    assert tuple(cfg.trainer.keys())  # the trainer config is there and names a target
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"


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
    assert metrics[f"test/{name}"] == pytest.approx(metrics[f"test/{name}"])  # finite, not NaN
    assert abs(metrics[f"test/{name}"]) < 1e3
