"""The shipped pretrained models: files, cards, loading, re-evaluation, and the commands' pretrained=."""

import csv
import hashlib
import json
import math

import pytest
import torch
from torchvision.io import write_png

import iresnet
from iresnet.cli.eval import evaluate
from iresnet.cli.invert import invert
from iresnet.cli.sample import sample
from iresnet.cli.eval import draws_of
from iresnet.data import DatasetNotFoundError, FashionMNISTDataModule, Mnist5kDataModule, Split, to_unit_interval
from iresnet.data.fashion_subset import SUBSET_DIR, FashionMNISTSubsetDataModule, fashion_mnist_or_subset
from iresnet.pretrained_models import FORMAT, NAMES, card, load_pretrained_module, pretrained_path
from iresnet.training.likelihood import per_image_scores
from reliability import assert_user_error, call_main

# Images re-evaluated per model: a quarter of mnist5k's test split, 2.5% of Fashion-MNIST's.
SUBSET = 250
FASHION_LICENSE = SUBSET_DIR / "LICENSE"


def test_three_models_ship():
    assert NAMES == ("mnist5k_small", "mnist5k_quality", "fashion_mnist")


@pytest.mark.parametrize("name", NAMES)
def test_file_is_small_safe_and_matches_its_card(name):
    path = pretrained_path(name)
    data = path.read_bytes()
    assert len(data) <= 10 * 2**20
    assert card(name)["bytes"] == len(data)
    assert card(name)["sha256"] == hashlib.sha256(data).hexdigest()
    saved = torch.load(path, weights_only=True)  # tensors and plain containers only
    assert saved["format"] == FORMAT and saved["name"] == name
    assert card(name)["trained_at"] and card(name)["test_bpd_se"] > 0


def test_pretrained_returns_the_model_in_eval_mode():
    model = iresnet.pretrained("mnist5k_small")
    assert isinstance(model, iresnet.FlowModel) and not model.training
    assert all(not m.training for m in model.modules())
    assert tuple(model.input_shape) == (1, 28, 28)


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="mnist5k_small, mnist5k_quality, fashion_mnist"):
        iresnet.pretrained("cifar10")


@pytest.mark.parametrize("command", ["eval", "sample", "invert"])
def test_commands_refuse_an_unknown_name(command):
    assert_user_error(*call_main(command, "pretrained=nope"), "unknown pretrained model 'nope'", "fashion_mnist")


def test_commands_refuse_both_sources(tmp_path):
    assert_user_error(*call_main("eval", "pretrained=mnist5k_small", f"ckpt_path={tmp_path}/x.ckpt"), "only one")


def test_fashion_subset_is_the_first_thousand_test_images():
    subset = FashionMNISTSubsetDataModule().split("test")
    assert subset.inputs.shape == (1000, 1, 28, 28) and subset.inputs.dtype == torch.uint8
    assert (torch.bincount(subset.labels, minlength=10) > 70).all()  # every class
    assert (FASHION_LICENSE).read_text().count("MIT") >= 1
    try:
        full = FashionMNISTDataModule(num_workers=0).split("test")
    except DatasetNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); the subset alone was checked")
    assert torch.equal(full.inputs[:1000], subset.inputs) and torch.equal(full.labels[:1000], subset.labels)


@pytest.mark.parametrize("name", NAMES)
def test_reevaluation_agrees_with_the_card(name):
    """The first SUBSET test images' mean bits/dim lies within 3 standard errors (the subset's and
    the card's together) of the card's test bits/dim."""
    module = load_pretrained_module(name)
    datamodule = FashionMNISTSubsetDataModule() if name == "fashion_mnist" else Mnist5kDataModule()
    test = datamodule.split("test")
    split = Split(to_unit_interval(test.inputs[:SUBSET]), test.labels[:SUBSET])
    bpd, _ = per_image_scores(module, draws_of(split, 8, 0, 50), 1, progress=False)
    mean, se = bpd.mean().item(), bpd.std().item() / math.sqrt(SUBSET)
    expected = card(name)
    assert abs(mean - expected["test_bpd"]) < 3 * math.hypot(se, expected["test_bpd_se"]), (mean, se, expected)


def test_sample_conditional_pretrained_all_labels(compose_config, tmp_path):
    png = tmp_path / "s.png"
    samples = sample(compose_config("sample", ["pretrained=mnist5k_quality", "label=all", "n=1", f"out={png}"]))
    assert samples.shape == (10, 1, 28, 28) and png.stat().st_size > 0


def test_invert_pretrained(compose_config, tmp_path):
    error = invert(compose_config("invert", ["pretrained=mnist5k_small", "n=2", f"out={tmp_path / 'r.png'}"]))
    assert error < 1e-3


def test_eval_per_image_keyed_by_file_path(compose_config, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    digits = Mnist5kDataModule().split("test").inputs[:3]
    for i, digit in enumerate(digits):
        write_png(digit, str(folder / f"d{i}.png"))
    table = tmp_path / "per_image.csv"
    result = evaluate(compose_config("eval", [
        "pretrained=mnist5k_small", f"images={folder}", f"per_image={table}", "per_image_draws=3",
        f"out={tmp_path / 'e.json'}",
    ]))  # fmt: skip
    rows = list(csv.DictReader(table.open()))
    assert [r["path"] for r in rows] == [str(folder / f"d{i}.png") for i in range(3)]
    bpd = torch.tensor([float(r["bpd"]) for r in rows])
    se = torch.tensor([float(r["se"]) for r in rows])
    assert (se > 0).all() and (se < 0.2).all()
    # The summary's mean is the same images' single-draw bits/dim: within the draws' noise of the rows'.
    assert abs(bpd.mean().item() - result["mean"]) < 0.2
    assert json.loads((tmp_path / "e.json").read_text())["pretrained"] == "mnist5k_small"


def test_eval_per_image_keyed_by_dataset_index(compose_config, tmp_path):
    table = tmp_path / "per_image.csv"
    x = Mnist5kDataModule().split("test").inputs[:4]
    torch.save(x, tmp_path / "x.pt")
    evaluate(compose_config("eval", [
        "pretrained=mnist5k_small", f"images={tmp_path / 'x.pt'}", f"per_image={table}", "per_image_draws=2",
        f"out={tmp_path / 'e.json'}",
    ]))  # fmt: skip
    rows = list(csv.DictReader(table.open()))
    assert [r["index"] for r in rows] == ["0", "1", "2", "3"]


def test_fashion_model_falls_back_to_the_shipped_subset(tmp_path, monkeypatch, caplog):
    """Without Fashion-MNIST on the machine, the fashion_mnist model's data is the shipped subset."""
    monkeypatch.setattr("iresnet.data.mnist.DEBIAN_FASHION_MNIST_DIR", tmp_path / "absent")
    data = load_pretrained_module("fashion_mnist").hparams.data
    assert data["_target_"] == "iresnet.data.fashion_subset.fashion_mnist_or_subset"
    datamodule = fashion_mnist_or_subset(**{**{k: v for k, v in data.items() if k != "_target_"}, "root": str(tmp_path)})
    assert isinstance(datamodule, FashionMNISTSubsetDataModule)
    assert "Fashion-MNIST not found" in caplog.text
    assert len(datamodule.split("test").labels) == 1000
