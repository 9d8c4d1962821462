"""The benchmark: the mnist5k_bench protocol config, and the suite's smoke run end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from reliability import assert_user_error, call_main

from iresnet.bench import memory
from iresnet.bench.reference import load_reference
from iresnet.bench.report import markdown
from iresnet.cli.bench import bench
from iresnet.cli.train import build_module
from iresnet.flows import ActNorm

REFERENCE_FILE = Path(__file__).parents[1] / "docs" / "reference" / "residual-flows-mnist5k-cpu.json"


def test_protocol_config_is_the_protocol(compose_config):
    cfg = compose_config("train", ["experiment=mnist5k_bench"])
    assert cfg.data._target_ == "iresnet.data.Mnist5kDataModule"
    assert (cfg.data.batch_size, cfg.data.n_bits, cfg.data.val_size) == (64, 8, 0)
    model = cfg.model
    assert model._target_ == "iresnet.models.ResidualFlow"
    assert (list(model.n_blocks), model.hidden_channels, model.kernels, model.activation._target_, model.coeff) == (
        [4, 4, 4], 64, "3-1-3", "iresnet.lipschitz.LipSwish", 0.98)  # fmt: skip
    assert (model.init_squeeze, model.factor_out, model.fc_blocks, model.fc_hidden, model.fc_hidden_layers) == (
        False, False, 4, 64, 2)  # fmt: skip
    assert (model.actnorm, model.prior._target_, model.alpha) == (True, "iresnet.models.StandardNormal", 1e-6)
    logdet = model.logdet
    assert logdet._target_ == "iresnet.logdet.RouletteLogDet"
    assert (logdet.dist, logdet.lam, logdet.n_exact_terms, logdet.eval_exact_terms) == ("poisson", 2.0, 2, 20)
    assert (logdet.n_probes, logdet.probe, logdet.grad, logdet.memory_efficient) == (1, "gaussian", "neumann", True)
    optim = cfg.optim
    adam = optim.optimizer
    assert (adam._target_, adam.lr, list(adam.betas), optim.warmup_iters) == ("torch.optim.Adam", 1e-3, [0.9, 0.99], 200)
    module = cfg.module
    assert (module.ema_decay, module.ema_warmup, module.spectral_norm_lanczos_steps) == (0.999, True, 5)
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm, cfg.trainer.max_epochs) == (
        1.0, "norm", 5)  # fmt: skip

    datamodule = instantiate(cfg.data)
    assert (len(datamodule.split("train").labels), len(datamodule.split("test").labels)) == (4000, 1000)
    flow = build_module(cfg, datamodule).model
    assert len(flow.residual_blocks()) == 3 * 4 + 4
    assert sum(isinstance(m, ActNorm) for m in flow.modules()) == 3 * 4 + 4 + 1  # + the first, on the input
    assert flow.final_shape == (16, 7, 7) and flow.factored_dims == []


def _smoke(compose_config, sections, *overrides):
    return compose_config("bench", ["profile=smoke", f"sections=[{','.join(sections)}]", *overrides])


@pytest.mark.slow
def test_smoke_run_reports_every_section(compose_config, tmp_path, capsys):
    out, md = tmp_path / "results.json", tmp_path / "table.md"
    sections = ["train", "memory", "eval", "inversion", "logdet", "spectral", "samples"]  # ddp: test_smoke_ddp
    bench(_smoke(compose_config, sections, f"out={out}", f"md={md}", f"reference={REFERENCE_FILE}"))
    report = json.loads(out.read_text())
    assert md.read_text() in capsys.readouterr().out
    assert report["protocol"] == "mnist5k-bench" and set(report["sections"]) == set(sections)
    env = report["environment"]
    assert env["cpu_count"] >= 1 and env["threads"] >= 1 and env["torch"] and env["device"] == "cpu"
    assert report["reference"] == json.loads(REFERENCE_FILE.read_text())
    assert "Reference rows: public Residual Flows" in md.read_text()
    s = report["sections"]

    (train,) = s["train"]
    assert train["variant"] == "roulette" and train["images_per_s"] > 0 and train["peak_rss_mib"] > 0

    growth = {(r["mode"], r["n_terms"]): r["peak_growth_mib"] for r in s["memory"]}
    backprop = growth[("backprop", 20)] - growth[("backprop", 2)]
    efficient = growth[("neumann_memory_efficient", 20)] - growth[("neumann_memory_efficient", 2)]
    assert backprop > 30  # the graph of every term is kept
    assert efficient < 0.25 * backprop  # flat, up to allocator noise

    for estimate in (s["eval"]["standard"], s["eval"]["high_accuracy"]):
        assert 0 < estimate["bpd"] < 20 and estimate["bpd_se"] > 0 and estimate["seconds"] > 0
    assert abs(s["eval"]["high_accuracy"]["difference"]) < 1

    assert {(r["coeff"], r["solver"]) for r in s["inversion"]} == {
        (c, solver) for c in (0.9, 0.98) for solver in ("fixed_point", "anderson")}  # fmt: skip
    for row in s["inversion"]:
        assert row["max_abs_error"] <= 1e-5 and row["net_evals"] > 0 and row["converged"]

    for row in s["logdet"]:
        assert row["std"] >= 0 and abs(row["bias"]) < 100 and row["mean_terms"] >= 1
    for row in s["spectral"]:
        assert row["max_update_rel_error"] < 0.1 and row["max_normalized_norm"] < 1

    (row,) = s["samples"]["rows"]
    assert row["n"] == 8 and row["seconds"] > 0 and 0 <= row["recognizability"] <= 1
    assert s["samples"]["test_images"]["n"] == 8 and "Sample quality" in md.read_text()


@pytest.mark.slow
def test_smoke_ddp(compose_config):
    report = bench(_smoke(compose_config, ["ddp"]))
    rows = report["sections"]["ddp"]["rows"]
    assert [r["processes"] for r in rows] == [1, 2] and [r["world_size"] for r in rows] == [1, 2]
    assert all(r["images_per_s"] > 0 for r in rows)


def test_protocol_overrides_in_the_documented_form(compose_config):
    # What the docs show: each override of the protocol quoted inside the list.
    cfg = compose_config("bench", ['protocol=["model.hidden_channels=32","module.spectral_norm_lanczos_steps=0"]'])
    train_cfg = compose_config("train", ["experiment=mnist5k_bench", *cfg.protocol])
    assert (train_cfg.model.hidden_channels, train_cfg.module.spectral_norm_lanczos_steps) == (32, 0)


@pytest.mark.slow
# Inversion is timed as users run it, without autograd graphs.
@pytest.mark.filterwarnings("error:Converting a tensor with requires_grad=True:UserWarning")
def test_smoke_full_protocol(compose_config):
    report = bench(_smoke(compose_config, ["full"]))
    full = report["sections"]["full"]
    assert full["steps"] == 4 and full["images_per_s"] > 0
    assert 0 < full["test_bpd_ema"] < 20 and 0 < full["test_bpd_raw"] < 20
    assert all(r["max_abs_error"] < 1e-3 for r in full["inversion_raw"])


def test_peak_memory_is_the_child_process_own():
    """ru_maxrss of a child started by a large process reports the parent's peak; ours does not."""
    ballast = bytearray(2048 * 2**20)  # well above the child's own peak (importing torch: about 0.5-0.7 GiB)
    ballast[:: 4096] = b"\1" * len(ballast[:: 4096])
    code = "from iresnet.bench.memory import peak_rss_mib; print(peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child < 1536
    del ballast


@pytest.mark.parametrize(
    "override, message",
    [("sections=[train,nope]", "unknown section"), ("train.variants=[series-x]", "unknown train.variants"),
     ("memory.modes=[fast]", "unknown memory.modes"), ("reference=no/such.json", "no such file")],
)  # fmt: skip
def test_unknown_names_are_user_errors(tmp_path, override, message):
    code, stderr = call_main("bench", "profile=smoke", override, f"paths.log_dir={tmp_path}")
    assert_user_error(code, stderr, message)


def test_reference_figures_come_from_the_file_or_not_at_all(tmp_path):
    assert load_reference(None) == {}
    assert load_reference(REFERENCE_FILE)["train_images_per_s"] > 0
    for text, message in [("{", "is not JSON"), ("[1, 2]", "holds a JSON list"), ('{"speed": 1}', "names none")]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match=message):
            load_reference(tmp_path / "bad.json")


def _report(reference: dict) -> dict:
    """A report with one train row, as the suite writes it."""
    row = {"variant": "roulette", "batch_size": 64, "threads": 2, "timed_steps": 3, "step_s": 1.0,
           "step_s_median": 1.0, "images_per_s": 64.0, "peak_rss_mib": None, "peak_cuda_mib": None}  # fmt: skip
    env = {"device_name": "cpu", "device": "cpu", "cpu_count": 2, "threads": 2, "torch": "2", "iresnet": "0",
           "git": "abc", "load_average": [0.0], "time": "now"}  # fmt: skip
    settings = {"protocol": []}
    return {"protocol": "mnist5k-bench", "environment": env, "settings": settings, "seconds": 1.0,
            "reference": reference, "sections": {"train": [row]}}  # fmt: skip


def test_report_has_reference_rows_only_with_figures():
    without = markdown(_report({}))
    assert "reference" not in without.lower()
    partial = markdown(_report({"source": "the peer", "machine": "a laptop", "train_images_per_s": 12.5}))
    assert "Reference rows: the peer, measured on a laptop." in partial
    ours, theirs = [line for line in partial.splitlines() if line.startswith("| r")]
    assert ours.endswith("| 64 | – |")  # no RSS on this platform: "–", not a crash
    assert theirs == "| reference (roulette) | – | – |  |  |  | 12.5 | – |"  # figures the file lacks: "–"


def test_peak_memory_falls_back_without_proc_or_resource(monkeypatch, tmp_path):
    """Windows has neither /proc nor the resource module: no figure, no crash."""
    monkeypatch.setattr(memory, "_STATUS", tmp_path / "no-status")
    assert memory.peak_rss_mib() > 0  # ru_maxrss where resource exists
    monkeypatch.setattr(memory, "resource", None)
    assert memory.peak_rss_mib() is None and memory.current_rss_mib() is None
