"""The command line with class-conditional and hybrid checkpoints: label=, accuracy, clear errors."""

import json
import re
from pathlib import Path

import pytest
from reliability import call_main

from iresnet.cli.compose import compose_config as compose
from iresnet.cli.eval import evaluate
from iresnet.cli.invert import invert
from iresnet.cli.sample import sample
from iresnet.cli.train import train

TINY = [
    "model.n_blocks=[1,1]", "model.hidden_channels=8", "model.fc_blocks=1", "trainer.limit_train_batches=4",
    "trainer.max_epochs=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "data.eval_batch_size=32",
    "~logger", "callbacks.sample_score.n=20", "callbacks.sample_score.classifier_steps=20",
]  # fmt: skip


@pytest.fixture(scope="module")
def conditional_ckpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("conditional") / "run"
    metrics = train(compose("train", ["experiment=mnist5k_conditional", *TINY, "callbacks.sample_grid.n=20"], run))
    assert metrics["test/bpd"] < 20
    assert (run / "samples" / "epoch_000.png").is_file()  # one row per class
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def hybrid_ckpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hybrid") / "run"
    metrics = train(compose("train", ["experiment=mnist5k_hybrid", *TINY], run))
    assert 0 <= metrics["test/acc"] <= 1 and metrics["test/bpd"] < 20
    return run / "checkpoints" / "last.ckpt"


def test_sample_one_class_or_one_row_per_class(conditional_ckpt, compose_config, tmp_path, capsys):
    samples = sample(compose_config("sample", [f"ckpt_path={conditional_ckpt}", "n=4", "label=3", f"out={tmp_path / 'a.png'}"]))
    assert samples.shape == (4, 1, 28, 28) and "of class 3" in capsys.readouterr().out
    grid = sample(compose_config("sample", [f"ckpt_path={conditional_ckpt}", "n=2", "label=all", f"out={tmp_path / 'b.png'}"]))
    assert grid.shape == (20, 1, 28, 28) and "one row per class" in capsys.readouterr().out


@pytest.mark.parametrize("label, message", [("10", r"label must be a class in 0\.\.9"), ("-1", "label must be a class")])
def test_label_out_of_range_is_a_user_error(conditional_ckpt, tmp_path, label, message):
    code, stderr = call_main("sample", f"ckpt_path={conditional_ckpt}", f"label={label}", f"out={tmp_path / 'x.png'}")
    assert code == 2 and stderr.startswith("error: ") and re.search(message, stderr)


def test_label_for_an_unconditional_model_is_a_user_error(tiny_ckpt, tmp_path):
    code, stderr = call_main("sample", f"ckpt_path={tiny_ckpt}", "label=3", f"out={tmp_path / 'x.png'}")
    assert code == 2 and "not class-conditional" in stderr and not (tmp_path / "x.png").exists()


def test_eval_prints_conditional_bpd_and_hybrid_accuracy(conditional_ckpt, hybrid_ckpt, compose_config, tmp_path, capsys):
    result = evaluate(compose_config("eval", [f"ckpt_path={conditional_ckpt}", f"out={tmp_path / 'c.json'}"]))
    assert "conditional on the labels" in capsys.readouterr().out and 0 < result["mean"] < 20
    result = evaluate(compose_config("eval", [f"ckpt_path={hybrid_ckpt}", f"out={tmp_path / 'h.json'}"]))
    out = capsys.readouterr().out
    assert "accuracy" in out and 0 <= json.loads((tmp_path / "h.json").read_text())["accuracy"] <= 1


def test_invert_a_conditional_checkpoint_uses_the_images_labels(conditional_ckpt, compose_config, tmp_path):
    error = invert(compose_config("invert", [f"ckpt_path={conditional_ckpt}", "n=4", f"out={tmp_path / 'r.png'}"]))
    assert error < 1e-3
