"""LipSwish on the CPU: its PyTorch formula run eagerly against ``torch.compile`` of it.

Usage: ``nice python scripts/lipswish_speed.py [--reps N] [--threads T]``; prints one JSON object.
Two measurements on the second residual block of ``experiment=mnist5k_small`` (batch 64,
4x14x14 input, 64 hidden channels, LipSwish first):

* ``op``: LipSwish alone on the block's hidden map ``(64, 64, 14, 14)`` channels-last, forward
  and first-order backward to ``x`` and ``beta``, eager and compiled, and eager to ``x`` alone;
* ``block``: the block in training (its roulette estimator, Neumann gradient), forward and
  backward, eager (a compiled function has no double backward), the same draws every time.

Rounds are interleaved; medians of ``--reps`` runs, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from iresnet.bench.environment import environment
from iresnet.ops.lipswish import lipswish


def mnist5k_small_block() -> torch.nn.Module:
    """The second residual block of the ``mnist5k_small`` model, in training mode."""
    configs = str(Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(config_dir=configs, version_base=None):
        cfg = compose("train", overrides=["experiment=mnist5k_small"])
    model = instantiate(cfg.model, input_shape=(1, 28, 28))
    return model.flow.flows[4].flows[2].train()


def times_ms(fn, reps: int) -> list[float]:
    """Wall times of ``reps`` calls after one warm-up call (which compiles)."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    x = (3 * torch.randn(64, 64, 14, 14)).contiguous(memory_format=torch.channels_last).requires_grad_()
    beta = (torch.rand(1, 64, 1, 1) + 0.5).requires_grad_()
    grad = torch.randn_like(x)
    compiled = torch.compile(lipswish, fullgraph=True, dynamic=False)
    ops = {name: (lambda fn=fn: torch.autograd.grad(fn(x, beta), (x, beta), grad)) for name, fn in
           (("eager", lipswish), ("compiled", compiled))}  # fmt: skip
    # The log-det series' case: a forward and a product w.r.t. x alone (beta's node pruned).
    ops["eager_x_only"] = lambda: torch.autograd.grad(lipswish(x, beta), x, grad)

    block = mnist5k_small_block()
    inputs = torch.randn(64, 4, 14, 14).contiguous(memory_format=torch.channels_last)

    def block_step() -> None:
        torch.manual_seed(1)
        y, logdet = block(inputs)
        (0.5 * y.square().sum() - logdet.sum()).backward()

    times: dict[str, list[float]] = {**{f"op_{name}": [] for name in ops}, "block_eager": []}
    for _ in range(3):  # interleaved rounds
        for name, fn in ops.items():
            times[f"op_{name}"] += times_ms(fn, args.reps)
        times["block_eager"] += times_ms(block_step, max(args.reps // 4, 3))
    medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
    print(json.dumps({"median_ms": medians, "reps": args.reps, "environment": environment(torch.device("cpu"))}))


if __name__ == "__main__":
    main()
