"""Peak memory of a residual block's forward + backward versus the number of series terms.

Compares the power-series log-determinant with full backpropagation through the series
(``grad="backprop"``) against the Neumann gradient computed inside the forward pass
(``grad="neumann", memory_efficient=True``; the Residual Flows setting), on a stack of
``N_BLOCKS`` residual blocks ``y = x + g(x)`` with small conv nets ``g`` and inputs of shape
``(16, 8, 16, 16)``. The stack makes visible what each block keeps alive between its
forward and the backward pass, on top of the transient memory of one block's series.

Each configuration runs in a fresh subprocess; its cost is the growth of the peak resident
set size (``resource.getrusage(...).ru_maxrss``) over the forward + backward, relative to
the peak after setup and a warm-up pass of the bare network. This is valid for the CPU
build of torch, whose tensors live in ordinary process memory.

Usage: ``python scripts/bench_logdet_memory.py [--quick] [--out results.json]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch import nn

from iresnet.logdet import PowerSeriesLogDet

MODES = {
    "backprop": dict(grad="backprop", memory_efficient=False),
    "neumann": dict(grad="neumann", memory_efficient=False),
    "backprop_memory_efficient": dict(grad="backprop", memory_efficient=True),
    "neumann_memory_efficient": dict(grad="neumann", memory_efficient=True),
}
QUICK_MODES = ("backprop", "neumann_memory_efficient")
N_TERMS = (2, 5, 10, 20)
SHAPE = (16, 8, 16, 16)
HIDDEN = 64
N_BLOCKS = 4


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _build_stack() -> list[nn.Module]:
    """``N_BLOCKS`` conv nets ``g``, scaled down so their series behave (memory ignores values)."""
    channels = SHAPE[1]
    nets = []
    for _ in range(N_BLOCKS):
        net = nn.Sequential(
            nn.Conv2d(channels, HIDDEN, 3, padding=1), nn.ELU(),
            nn.Conv2d(HIDDEN, HIDDEN, 1), nn.ELU(),
            nn.Conv2d(HIDDEN, channels, 3, padding=1),
        )
        with torch.no_grad():
            for layer in net[::2]:
                layer.weight.mul_(0.5 / layer.weight.flatten(1).norm())
        nets.append(net)
    return nets


def measure(mode: str, n_terms: int) -> dict[str, object]:
    """Run one configuration in this process; returns its peak-memory growth and time."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    nets = _build_stack()
    x = torch.randn(SHAPE)
    for net in nets:  # warm-up, so kernel setup and parameter .grad buffers are not counted
        net(x).sum().backward()
    estimator = PowerSeriesLogDet(n_terms=n_terms, **MODES[mode])

    baseline = _peak_mib()
    start = time.perf_counter()
    y, logdet = x, 0.0
    for net in nets:
        g_y, block_logdet = estimator(net, y, training=True)
        y, logdet = y + g_y, logdet + block_logdet
    loss = (0.5 * y.pow(2).flatten(1).sum(1) - logdet).mean()
    loss.backward()
    elapsed = time.perf_counter() - start
    return {
        "mode": mode,
        **MODES[mode],
        "n_terms": n_terms,
        "peak_growth_mib": round(_peak_mib() - baseline, 1),
        "time_s": round(elapsed, 3),
    }


def run_all(modes: tuple[str, ...], n_terms: tuple[int, ...]) -> dict[str, object]:
    """Measure every (mode, n_terms) pair, each in a fresh interpreter."""
    results = []
    for mode in modes:
        for n in n_terms:
            cmd = [sys.executable, __file__, "--worker", mode, str(n)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
    summary = {
        mode: {
            "n_terms": list(n_terms),
            "peak_growth_mib": [r["peak_growth_mib"] for r in results if r["mode"] == mode],
        }
        for mode in modes
    }
    for entry in summary.values():
        peaks = entry["peak_growth_mib"]
        entry["growth_from_first_to_last_mib"] = round(peaks[-1] - peaks[0], 1)
    return {
        "input_shape": list(SHAPE),
        "hidden_channels": HIDDEN,
        "blocks": N_BLOCKS,
        "measure": "growth of peak RSS (ru_maxrss) during forward+backward, fresh subprocess per config",
        "results": results,
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only backprop vs neumann_memory_efficient")
    parser.add_argument("--out", help="also write the JSON to this file")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "N_TERMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]))))
        return
    report = run_all(QUICK_MODES if args.quick else tuple(MODES), N_TERMS)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
