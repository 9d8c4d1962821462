"""``iresnet-bench [overrides]``: the benchmark suite of the mnist5k-bench protocol, as JSON and markdown.

A Hydra application like the other commands: the ``bench`` config has one key per section
(``train``, ``memory``, ``eval``, ...) and ``sections`` chooses which run. Examples::

    iresnet-bench profile=quick                                # every section, small sizes, < 2 min on a CPU
    iresnet-bench sections=[train,eval] out=results.json md=table.md
    iresnet-bench sections=[eval,inversion] ckpt=runs/train/<date>/checkpoints/last.ckpt
    iresnet-bench sections=[full] full.epochs=5
    iresnet-bench sections=[train] 'protocol=["model.hidden_channels=32"]'   # overrides of mnist5k_bench
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from iresnet.bench.report import markdown
from iresnet.bench.runs import EXPERIMENT
from iresnet.bench.suite import Suite
from iresnet.cli.common import hydra_command, writable_output
from iresnet.cli.compose import compose_config
from iresnet.cli.train import build_module
from iresnet.training import FlowLightningModule


def build_protocol(overrides: Sequence[str]) -> tuple[FlowLightningModule, pl.LightningDataModule]:
    """The module and data of ``iresnet-train experiment=mnist5k_bench <overrides>`` (composed
    beside the running application: :func:`~iresnet.cli.compose.compose_config`)."""
    cfg = compose_config("train", [f"experiment={EXPERIMENT}", *overrides])
    datamodule = instantiate(cfg.data)
    return build_module(cfg, datamodule), datamodule


def bench(cfg: DictConfig) -> dict:
    """Runs the sections of ``cfg``; prints the tables, writes ``cfg.out`` and ``cfg.md``."""
    out, md = writable_output(cfg.out, cfg.overwrite), writable_output(cfg.md, cfg.overwrite)
    workdir = Path(cfg.paths.output_dir)
    report = Suite(cfg, build_protocol, workdir, log=lambda m: print(m, file=sys.stderr, flush=True)).run()
    text = markdown(report)
    print(text)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(text)
    print(f"wrote {out} and {md}")
    return report


main = hydra_command(bench, "bench")


if __name__ == "__main__":
    main()
