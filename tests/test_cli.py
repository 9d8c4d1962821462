"""The command-line tools end to end: train, eval, sample, invert; user errors; installed scripts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliability import run_script

from iresnet.cli.eval import evaluate
from iresnet.cli.invert import invert
from iresnet.cli.sample import sample

def test_train_writes_run_directory(tiny_run):
    """The session's tiny run (conftest.py): what iresnet-train leaves in a run directory."""
    assert sorted(p.name for p in (tiny_run / "samples").glob("*.png"))
    assert sorted(p.name for p in (tiny_run / "reconstructions").glob("*.png"))
    assert (tiny_run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["test/bpd_se"] > 0
    assert (tiny_run / "csv" / "metrics.csv").is_file()
    assert (tiny_run / "curves.png").stat().st_size > 0
    # the sample scores of the validation, beside the test images' own
    assert 0 <= metrics["samples/recognizability"] <= 1 and metrics["samples/frechet_distance"] >= 0
    assert metrics["test_images/class_entropy_ratio"] > 0


def test_sample_scores_and_uses_the_experiments_temperature(tiny_ckpt, compose_config, tmp_path, capsys):
    png = tmp_path / "scored.png"
    samples = sample(compose_config("sample", [f"ckpt_path={tiny_ckpt}", "n=12", "score=true", f"out={png}"]))
    out = capsys.readouterr().out
    assert "temperature 0.8" in out  # the training config's, recorded in the checkpoint
    assert "recognizability" in out and "Fréchet distance" in out
    report = json.loads(png.with_suffix(".scores.json").read_text())
    assert report["temperature"] == 0.8 and report["samples"]["n"] == len(samples) == 12
    assert report["test_images"]["n"] == 12 and 0 < report["test_images"]["classifier_accuracy"] <= 1


def test_sample_temperature_sweep(tiny_ckpt, compose_config, tmp_path, capsys):
    png = tmp_path / "sweep.png"
    cfg = compose_config("sample", [f"ckpt_path={tiny_ckpt}", "n=6", "temperature=[0.5,1.0]", "score=true", f"out={png}"])
    samples = sample(cfg)
    assert samples.shape == (12, 1, 28, 28) and png.stat().st_size > 0
    single = sample(compose_config("sample", [f"ckpt_path={tiny_ckpt}", "n=6", "temperature=1.0", f"out={tmp_path / '1.png'}"]))
    assert torch.equal(samples[6:], single) and not torch.equal(samples[:6], single)  # the same draws, rescaled
    reports = json.loads(png.with_suffix(".scores.json").read_text())
    assert [r["temperature"] for r in reports] == [0.5, 1.0] and all(r["samples"]["n"] == 6 for r in reports)
    assert "temperature 0.5:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="positive number or a list"):
        sample(compose_config("sample", [f"ckpt_path={tiny_ckpt}", "temperature=[0.5,-1]", f"out={tmp_path / 'x.png'}"]))


def test_eval_sample_invert_from_checkpoint(tiny_ckpt, compose_config, tmp_path):
    out = tmp_path / "eval.json"
    result = evaluate(compose_config("eval", [f"ckpt_path={tiny_ckpt}", f"out={out}", "trainer.limit_test_batches=1"]))
    assert json.loads(out.read_text())["mean"] == pytest.approx(result["mean"])
    assert result["n"] == 32 and 0 < result["mean"] < 20 and result["se"] > 0
    assert "RouletteLogDet" in result["estimator"] and result["weights"] == "ema"
    raw = evaluate(compose_config("eval", [f"ckpt_path={tiny_ckpt}", f"out={tmp_path / 'raw.json'}", "weights=raw",
                                           "trainer.limit_test_batches=1"]))  # fmt: skip
    assert raw["weights"] == "raw" and raw["n"] == 32 and raw["mean"] != pytest.approx(result["mean"], abs=1e-6)
    with pytest.raises(ValueError, match="weights must be 'ema'"):
        evaluate(compose_config("eval", [f"ckpt_path={tiny_ckpt}", f"out={tmp_path / 'x.json'}", "weights=best"]))

    png = tmp_path / "samples.png"
    samples = sample(compose_config("sample", [f"ckpt_path={tiny_ckpt}", "n=9", "temperature=0.8", f"out={png}"]))
    assert png.stat().st_size > 0 and samples.shape == (9, 1, 28, 28)

    png = tmp_path / "recon.png"
    error = invert(compose_config("invert", [f"ckpt_path={tiny_ckpt}", "n=8", f"out={png}"]))
    assert png.stat().st_size > 0 and error <= 1e-3


def test_outputs_are_never_overwritten_silently(tiny_ckpt, compose_config, tmp_path):
    png = tmp_path / "samples.png"
    png.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=true"):
        sample(compose_config("sample", [f"ckpt_path={tiny_ckpt}", f"out={png}"]))
    assert png.read_bytes() == b"keep me"


@pytest.mark.slow  # the installed scripts in subprocesses; reliability's tests run the same errors in-process
def test_user_errors_exit_2_with_one_line(tmp_path):
    missing = run_script("iresnet-sample", f"ckpt_path={tmp_path / 'nope.ckpt'}", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("error: Checkpoint") and "Traceback" not in missing.stderr
    bad = run_script("iresnet-train", "model.coeff=1.2", "trainer.max_epochs=1", cwd=tmp_path)
    assert bad.returncode == 2 and "coeff" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_plain_install_finds_its_configs_from_any_directory(tmp_path):
    """A non-editable install ships configs/ inside the package; the scripts work from elsewhere."""
    repo = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(repo)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    assert (target / "iresnet" / "configs" / "train.yaml").is_file()
    assert (target / "iresnet" / "configs" / "model" / "logdet" / "roulette.yaml").is_file()
    rooms = {p.parent.relative_to(repo) for p in (repo / "iresnet").glob("*/__init__.py")}
    assert all((target / room / "__init__.py").is_file() for room in rooms), "a room is missing from pyproject"
    env = {**os.environ, "PYTHONPATH": str(target)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = subprocess.run(
        [str(target / "bin" / "iresnet-train"), "--cfg", "job", "experiment=toy2d"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert shown.returncode == 0, shown.stderr
    assert "iresnet.models.ToyFlow" in shown.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import iresnet.cli.common as c; print(c.config_dir())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert probe.stdout.strip().startswith(str(target))
