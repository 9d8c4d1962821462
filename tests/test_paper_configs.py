"""The paper experiments are the papers' settings (docs/experiments.md, row by row), their models
have the papers' parameter counts, and every experiment validates on data disjoint from its test
split (compared by image content, not by index)."""

import hashlib
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from iresnet.cli.common import config_dir

DOCS = Path(__file__).resolve().parents[1] / "docs" / "experiments.md"
EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))


def _tables() -> dict[str, dict[str, object]]:
    """``{experiment: {config key: expected value}}`` from the markdown tables of docs/experiments.md."""
    tables, current = {}, None
    for line in DOCS.read_text().splitlines():
        if line.startswith("## "):  # a section named after an experiment holds its table
            name = line[3:].strip()
            current = tables.setdefault(name, {}) if name in EXPERIMENTS else None
        elif current is not None and line.startswith("| ") and not line.startswith("| key") and "---" not in line:
            key, value, _source = (cell.strip() for cell in line.strip("|").split("|", 2))
            current[key] = yaml.safe_load(value)
    return tables


TABLES = _tables()


def test_every_paper_experiment_has_a_table():
    assert set(TABLES) == {"cifar10_resflow", "mnist_resflow", "cifar10_iresnet", "mnist_iresnet"}
    assert all(len(rows) >= 15 for rows in TABLES.values())


@pytest.mark.parametrize("experiment", sorted(TABLES))
def test_experiment_equals_its_table(experiment, compose_config):
    cfg = OmegaConf.to_container(compose_config("train", [f"experiment={experiment}"]), resolve=False)
    for key, expected in TABLES[experiment].items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        if isinstance(expected, float) or isinstance(node, float):
            assert node == pytest.approx(expected), key
        else:
            assert node == expected, key


@pytest.mark.parametrize("experiment, shape, reference", [
    ("cifar10_resflow", [3, 32, 32], 25_174_233),  # the reference's count for its CIFAR-10 defaults: "25.2 M"
    ("mnist_resflow", [1, 28, 28], 16_608_693),
])  # fmt: skip
def test_residual_flow_has_the_references_parameter_count(experiment, shape, reference, compose_config):
    cfg = compose_config("train", [f"experiment={experiment}"])
    torch.manual_seed(0)
    model = instantiate(cfg.model, input_shape=shape)
    blocks = len(model.residual_blocks())
    assert blocks == 3 * 16 + 4
    # The reference's iResBlock also registers its roulette's two constants (geom_p, lamb) as
    # parameters, which are never trained: two per block.
    assert sum(p.numel() for p in model.parameters()) == reference - 2 * blocks


def _fingerprints(split) -> set[str]:
    return {hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in split.inputs}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_validates_on_data_disjoint_from_its_test_split(experiment, compose_config, data_root):
    # The fake files hold a dozen training images: hold out a few of them (the real default is 5,000).
    cfg = compose_config("train", [f"experiment={experiment}", f"paths.data_dir={data_root}"])
    if "val_size" in cfg.data and cfg.data.val_size > 4 and not cfg.data._target_.endswith("Mnist5kDataModule"):
        cfg.data.val_size, cfg.data.batch_size = 4, 2
    datamodule = instantiate(cfg.data)
    train, val, test = (_fingerprints(datamodule.split(name)) for name in ("train", "val", "test"))
    assert not train & test and not val & test and not train & val
    assert val or experiment == "mnist5k_bench" or cfg.trainer.limit_val_batches == 0


def test_mnist5k_holds_out_fifty_digits_of_each_class(compose_config):
    datamodule = instantiate(compose_config("train", []).data)
    assert datamodule.split("val").labels.bincount().tolist() == [50] * 10
    assert len(datamodule.split("train").labels) == 3500 and len(datamodule.split("test").labels) == 1000


def test_the_benchmark_protocol_trains_on_all_training_digits_and_keeps_only_last_ckpt(compose_config):
    cfg = compose_config("train", ["experiment=mnist5k_bench"])
    assert cfg.data.val_size == 0 and cfg.trainer.limit_val_batches == 0
    assert cfg.callbacks.model_checkpoint.save_top_k == 0 and cfg.callbacks.model_checkpoint.save_last
    assert len(instantiate(cfg.data).split("train").labels) == 4000
