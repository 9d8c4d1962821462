"""``iresnet-bench``: the benchmark suite of the mnist5k-bench protocol, as JSON and markdown.

Examples::

    iresnet-bench --quick                               # every section, small sizes, < 2 min on a CPU
    iresnet-bench --only train,eval --out results.json --md table.md
    iresnet-bench --only eval,inversion --ckpt runs/train/<date>/checkpoints/last.ckpt
    iresnet-bench --full-protocol --epochs 5 --only full
    iresnet-bench --only train -- model.hidden_channels=32      # Hydra overrides of mnist5k_bench
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from iresnet.bench.report import markdown
from iresnet.bench.runs import EXPERIMENT
from iresnet.bench.settings import DEFAULT_SECTIONS, MEMORY_MODES, SECTIONS, profile
from iresnet.bench.suite import Suite
from iresnet.cli.common import config_dir, exit_on_user_error, writable_output
from iresnet.cli.train import build_module
from iresnet.training import FlowLightningModule


def build_protocol(overrides: Sequence[str]) -> tuple[FlowLightningModule, pl.LightningDataModule]:
    """The module and data of ``iresnet-train experiment=mnist5k_bench <overrides>``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={EXPERIMENT}", *overrides])
    datamodule = instantiate(cfg.data)
    return build_module(cfg, datamodule), datamodule


def _output(path: str | None, overwrite: bool) -> Path | None:
    """``path`` ready to write (``None`` stays ``None``); an existing file only with ``--overwrite``."""
    if path is None:
        return None
    try:
        return writable_output(path, overwrite)
    except FileExistsError:
        raise FileExistsError(f"{path!r} already exists; choose another file or pass --overwrite.") from None


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _choices(kind: str, valid: Callable[[str], bool], choices: str) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: comma-separated names, each ``valid``."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(text.split(","))
        unknown = [name for name in names if not valid(name)]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {kind} {unknown}; choose from {choices}")
        return names

    return parse


def _is_variant(name: str) -> bool:
    return name == "roulette" or (name.startswith("series-") and name.removeprefix("series-").isdigit())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iresnet-bench",
        description="The benchmark suite of the mnist5k-bench protocol, as JSON and markdown tables.",
        epilog=f"Sections: {', '.join(SECTIONS)} (default: all but full). See docs/benchmarks.md.",
    )
    add = p.add_argument
    add("overrides", nargs="*", help="Hydra overrides of the mnist5k_bench config, for every section")
    add("--only", type=_choices("section", SECTIONS.__contains__, ", ".join(SECTIONS)),
        help="comma-separated sections to run, e.g. train,eval")  # fmt: skip
    add("--quick", action="store_true", help="fewer steps, images and draws, batch 16: minutes on a CPU")
    add("--smoke", action="store_true", help="with --quick: a tiny model, seconds (the test suite runs it)")
    add("--full-protocol", action="store_true", help="also run the full protocol (section full)")
    add("--epochs", type=int, help="epochs of the full protocol (default 5)")
    add("--out", help="write the JSON report here")
    add("--md", help="write the markdown tables here (they are printed too)")
    add("--overwrite", action="store_true", help="replace existing --out / --md files")
    add("--workdir", help="where training runs are written (default runs/bench/<date>)")
    add("--device", help="cpu (default), cuda or cuda:N")
    add("--threads", type=int, help="torch threads here and per training process")
    add("--seed", type=int)
    add("--ckpt", help="evaluate and invert this checkpoint's EMA model instead of a fresh one")
    add("--variants", type=_choices("variant", _is_variant, "roulette, series-N"),
        help="train variants, e.g. roulette,series-5,series-20")  # fmt: skip
    add("--batch-size", type=int, help="training batch size of the train and ddp sections (protocol: 64)")
    add("--warmup-steps", type=int, help="training steps before timing")
    add("--steps", type=int, dest="timed_steps", help="timed training steps")
    add("--memory-modes", type=_choices("mode", MEMORY_MODES.__contains__, ", ".join(MEMORY_MODES)),
        help="gradient modes of the memory curve")  # fmt: skip
    add("--memory-terms", type=_ints, help="series terms of the memory curve, e.g. 2,5,10,20")
    add("--memory-batch", type=int, help="batch size of the memory curve")
    add("--eval-images", type=int, help="test images to evaluate (protocol: 1000)")
    add("--eval-terms", type=int, help="exact terms of the evaluation estimator (protocol: 20)")
    add("--eval-probes", type=int, help="probes of the evaluation estimator (protocol: 1)")
    add("--eval-chunk", type=int,
        help="at most this many samples per branch evaluation of the evaluation estimator (its chunk_size; its chunk_pixels bound holds too)")  # fmt: skip
    add("--high-accuracy-images", type=int)
    add("--high-accuracy-terms", type=int)
    add("--high-accuracy-probes", type=int)
    add("--invert-images", type=int, help="test images to invert (protocol: 64)")
    add("--invert-tol", type=float, help="max-abs image-space error to reach (default 1e-5)")
    add("--invert-coeffs", type=_floats, help="coeffs of the fresh models to invert (default 0.9,0.98)")
    add("--logdet-draws", type=int, help="estimator calls per block, coeff and estimator")
    return p


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the sections the arguments ask for; prints the tables, writes ``--out`` and ``--md``."""
    args = parser().parse_args(argv)
    sections = args.only or (DEFAULT_SECTIONS + ("full",) if args.full_protocol else DEFAULT_SECTIONS)
    base = profile(args.quick, args.smoke)
    options = {k: v for k, v in vars(args).items() if k in base.__dataclass_fields__ and k != "overrides"}
    settings = base.replace(
        **options, sections=sections, train_variants=args.variants, overrides=(*base.overrides, *args.overrides)
    )
    out, md = _output(args.out, args.overwrite), _output(args.md, args.overwrite)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    workdir = Path(args.workdir or Path("runs") / "bench" / stamp)
    report = Suite(settings, build_protocol, workdir, log=lambda m: print(m, file=sys.stderr, flush=True)).run()
    text = markdown(report)
    print(text)
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
    if md:
        md.write_text(text)
    return report


if __name__ == "__main__":
    main()
