"""Data-parallel training: two CPU processes (trainer=ddp_cpu, gloo) stay in step, and the
checkpoint they write evaluates in a single process; the SLURM example matches the docs."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from reliability import TINY, run_script

from iresnet.cli.compose import compose_config as compose
from iresnet.cli.common import config_dir
from iresnet.cli.eval import evaluate
from iresnet.training.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_ddp_cpu_run_keeps_spectral_norms_identical(tmp_path):
    run, probe = tmp_path / "run", tmp_path / "spectral_norms"
    result = run_script(
        "iresnet-train", "trainer=ddp_cpu", *TINY, "trainer.limit_train_batches=3", "trainer.max_epochs=1",
        f"run_dir={run}", "+callbacks.probe._target_=reliability.SpectralNormProbe", f"+callbacks.probe.path={probe}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["val/bpd"]) and math.isfinite(metrics["test/bpd"])
    # The probe pushed rank 1's power-iteration buffers off after the last step; the module's
    # broadcast at the end of training brought them back to rank 0's.
    # Weights, EMA and ActNorm statistics agree as well.
    rank0, rank1 = (torch.load(probe / f"rank{r}.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys() and any(k.endswith("_u") for k in rank0)
    assert any(k.endswith(".log_scale") for k in rank0) and any(k.startswith("ema.module.") for k in rank0)
    assert [k for k in rank0 if not torch.equal(rank0[k], rank1[k])] == []
    # Rank 0 wrote the checkpoint; it evaluates in one process.
    ckpt = run / "checkpoints" / "last.ckpt"
    assert read_checkpoint(ckpt)["global_step"] == 3
    single = evaluate(compose("eval", [f"ckpt_path={ckpt}", "trainer.limit_test_batches=1"], tmp_path / "eval"))
    assert math.isfinite(single["mean"]) and single["n"] > 0


def test_slurm_launcher_example_is_consistent_with_the_docs():
    launcher = yaml.safe_load((Path(config_dir()) / "hydra" / "launcher" / "slurm.yaml").read_text())
    assert launcher["defaults"] == ["submitit_slurm"]
    # One task per GPU: Lightning's SLURM environment maps each task to one rank.
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"]
    docs = (REPO / "docs" / "scaling.md").read_text()
    assert "hydra/launcher=slurm" in docs and "trainer=ddp" in docs and "trainer=ddp_cpu" in docs
