"""Side by side: the Residual Flows reference and iresnet trained on one protocol, on one device.

Usage::

    python scripts/compare_reference.py --peer-dir ../shared/peers/residual-flows --protocol mnist5k \\
        --device cpu --steps 100 --batch-size 64 [--warmup-steps 60] [--threads 2] [--rounds 3] \\
        [--out compare.json] [--override compile=true ...]

Runs, one after the other, each in a fresh process on the same device:

1. the reference: ``scripts/reference_steps.py``, its code imported from ``--peer-dir``;
2. iresnet: ``iresnet-train`` (``python -m iresnet.cli.train``) on the same protocol, timed by
   :class:`iresnet.bench.timing.StepTimer`. ``mnist5k``: ``experiment=mnist5k_bench``.
   ``cifar10-paper``: ``experiment=cifar10_resflow`` (the reference's CIFAR-10 defaults) on the
   mnist5k digits padded to 32x32 and repeated to 3 channels, where the reference trains on random
   3x32x32 images (no CIFAR-10 offline; speed and memory depend on the shapes, not the pixels).
   ``--override`` adds ``iresnet-train`` overrides to this run only (e.g. ``compile=true``).

``--rounds N`` runs the pair N times, in alternating order (reference first in odd rounds, iresnet
first in even ones), so that a machine whose speed drifts within the sitting favours neither side;
each side's steady state then pools the timed steps of all its runs, and the table gives the ratio
of every round as well.

Both train the same number of training images (4,000) with the same batch size and seed. Writes
``--out`` (JSON) and the markdown table beside it (``.md``), and prints the table: steady-state
images/s over the steps after ``--warmup-steps`` (mean and median step), the whole process (start
to exit, timed from outside), peak memory (the CUDA allocator's on a GPU, the resident set on the
CPU) and parameter counts. ``--threads`` sets both processes' ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from iresnet.bench.environment import environment
from iresnet.bench.report import table
from iresnet.bench.runs import BenchmarkError, run_timed, run_training
from iresnet.bench.timing import steady_state
from reference_model import PROTOCOLS

REFERENCE_STEPS = Path(__file__).with_name("reference_steps.py")
WARMUP_STEPS = 60
# iresnet-train's experiment and overrides for each protocol.
IRESNET = {
    "mnist5k": ("mnist5k_bench", []),
    "cifar10-paper": (
        "cifar10_resflow",
        ["data=mnist5k", "+data.pad=2", "+data.channels=3", "data.val_size=0", "data.hflip=false"],
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: the default warm-up is 60 steps, or half the steps when there are fewer."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer-dir", type=Path, required=True, help="the residual-flows checkout")
    parser.add_argument("--protocol", choices=PROTOCOLS, required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--steps", type=int, required=True, help="training steps of each run")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--warmup-steps", type=int, help=f"steps left out of the steady state (default {WARMUP_STEPS})")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of both runs (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, in alternating order (default 1)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="an iresnet-train override of the iresnet run only (repeatable), e.g. compile=true")
    parser.add_argument("--out", type=Path, default=Path("compare_reference.json"), help="JSON; the table goes to .md")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --out files")
    parser.add_argument("--workdir", type=Path, help="keep the runs' logs and records here (default: discarded)")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.batch_size < 1:
        parser.error(f"--steps must be at least 2 and --batch-size at least 1, got {args.steps} and {args.batch_size}.")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}.")
    if args.warmup_steps is None:
        args.warmup_steps = min(WARMUP_STEPS, args.steps // 2)
    if not 0 <= args.warmup_steps < args.steps:
        parser.error(f"--warmup-steps={args.warmup_steps} leaves no timed steps of --steps={args.steps}.")
    if not (args.peer_dir / "resflows").is_dir():
        parser.error(f"no reference code at {args.peer_dir}/resflows; pass the residual-flows checkout.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; use --device cpu.")
    existing = [str(p) for p in (args.out, args.out.with_suffix(".md")) if p.exists()]
    if existing and not args.overwrite:
        parser.error(f"{', '.join(existing)} already exist(s); choose another --out or pass --overwrite.")
    return args


def reference_command(args: argparse.Namespace, record: Path) -> list[str]:
    """The reference's run: :mod:`reference_steps` in a fresh interpreter."""
    return [
        sys.executable, str(REFERENCE_STEPS), "--peer-dir", str(args.peer_dir), "--protocol", args.protocol,
        "--device", args.device, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--seed", str(args.seed), "--out", str(record),
    ]  # fmt: skip


def run_reference(args: argparse.Namespace, run_dir: Path) -> dict:
    record = run_dir / "step_timer.json"
    command = reference_command(args, record)
    wall = run_timed(command, run_dir, args.threads)
    return {**json.loads(record.read_text()), "wall_s": wall, "command": command}


def run_iresnet(args: argparse.Namespace, run_dir: Path) -> dict:
    experiment, overrides = IRESNET[args.protocol]
    overrides = [
        *overrides, f"data.batch_size={args.batch_size}", f"seed={args.seed}", f"trainer.max_steps={args.steps}",
        "trainer.max_epochs=-1", "trainer=gpu" if args.device == "cuda" else "trainer=cpu", *args.override,
    ]  # fmt: skip
    record = run_training(overrides, run_dir, threads=args.threads, experiment=experiment)
    return {**record, "command": ["iresnet-train", f"experiment={experiment}", *overrides]}


def summary(records: list[dict], warmup_steps: int) -> dict:
    """One side's entry in the JSON, over its runs (one per round): the steady state of all their
    timed steps together, the mean whole process, the highest peak memory, and parameters."""
    first = records[0]
    timed = [step for record in records for step in record["step_s"][warmup_steps:]]
    steady = steady_state({**first, "step_s": timed}, 0)
    cuda = None if first["peak_cuda_mib"] is None else max(record["peak_cuda_mib"] for record in records)
    rss = max(record["peak_rss_mib"] for record in records)
    return {
        **steady,
        "images_per_s_median": first["batch_size"] * first["world_size"] / steady["step_s_median"],
        "steps": len(first["step_s"]),
        "runs": len(records),
        "wall_s": statistics.mean(record["wall_s"] for record in records),
        # the memory the steps ran in: the CUDA allocator's on a GPU, else the process's
        "peak_mib": rss if cuda is None else cuda,
        "peak_rss_mib": rss,
        "peak_cuda_mib": cuda,
        **{k: first[k] for k in ("parameters", "threads", "command")},
    }


def round_ratios(runs: dict[str, list[dict]], warmup_steps: int) -> list[float]:
    """Per round, the reference's mean steady-state step over iresnet's."""
    return [
        steady_state(ref, warmup_steps)["step_s"] / steady_state(ours, warmup_steps)["step_s"]
        for ref, ours in zip(runs["reference"], runs["iresnet"])
    ]


def _load(average: list[float] | None) -> str:
    return "–" if average is None else "/".join(f"{x:.1f}" for x in average)


def markdown(result: dict) -> str:
    """The comparison as a markdown table, headed by what was run where."""
    ref, ours, env = result["reference"], result["iresnet"], result["environment"]
    memory = "peak CUDA memory, MiB" if result["device"] == "cuda" else "peak RSS, MiB"

    def row(name: str, key: str, ratio: float) -> list[object]:
        return [name, ref[key], ours[key], ratio]

    rows = [
        row("parameters", "parameters", ours["parameters"] / ref["parameters"]),
        row("steady-state images/s (mean step)", "images_per_s", ours["images_per_s"] / ref["images_per_s"]),
        row("steady-state images/s (median step)", "images_per_s_median",
            ours["images_per_s_median"] / ref["images_per_s_median"]),  # fmt: skip
        row("whole process, s", "wall_s", ours["wall_s"] / ref["wall_s"]),
        row(memory, "peak_mib", ours["peak_mib"] / ref["peak_mib"]),
    ]
    return "\n".join([
        f"# iresnet beside the reference: {result['protocol']}, batch {result['batch_size']}, {result['device']}",
        "",
        f"{env['device_name']}, {env['cpu_count']} CPUs, threads {ref['threads']} (reference) and {ours['threads']} "
        f"(iresnet), torch {env['torch']}, iresnet {env['git']}, load average {_load(env['load_average'])} before and "
        f"{_load(env.get('load_average_after'))} after, {env['time']}. "
        f"{result['steps']} steps each; steady state: steps {result['warmup_steps'] + 1} to {result['steps']}.",
        "",
        f"iresnet's run: `{' '.join(ours['command'])}`.",
        "",
        table(["", "reference", "iresnet", "iresnet / reference"], rows),
        "",
        *_rounds(result),
    ])  # fmt: skip


def _rounds(result: dict) -> list[str]:
    ratios = result.get("round_ratios", [])
    if len(ratios) < 2:
        return []
    listed = ", ".join(f"{r:.2f}" for r in ratios)
    return [
        f"{len(ratios)} rounds in alternating order; steady-state ratio of the mean steps per round: {listed} "
        f"(median {statistics.median(ratios):.2f}). The table pools each side's timed steps and averages its "
        "whole-process times.",
        "",
    ]


def compare(args: argparse.Namespace, workdir: Path) -> dict:
    """Runs the reference, then iresnet (``--rounds`` times, in alternating order); returns the JSON result."""
    env = environment(torch.device(args.device))
    sides = [("reference", run_reference), ("iresnet", run_iresnet)]
    runs: dict[str, list[dict]] = {name: [] for name, _ in sides}
    for i in range(args.rounds):
        for name, run in sides if i % 2 == 0 else sides[::-1]:
            print(f"{name}: {args.steps} steps of {args.protocol}, batch {args.batch_size}, {args.device}"
                  f" (round {i + 1} of {args.rounds})", file=sys.stderr)  # fmt: skip
            runs[name].append(run(args, workdir / (name if args.rounds == 1 else f"{name}-{i + 1}")))
    env["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "protocol": args.protocol, "device": args.device, "batch_size": args.batch_size, "steps": args.steps,
        "warmup_steps": args.warmup_steps, "seed": args.seed, "rounds": args.rounds, "environment": env,
        **{name: summary(records, args.warmup_steps) for name, records in runs.items()},
        "round_ratios": round_ratios(runs, args.warmup_steps),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            result = compare(args, args.workdir or Path(scratch))
        except BenchmarkError as err:
            sys.exit(f"error: {err}")
    text = markdown(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
