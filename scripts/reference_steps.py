"""Training steps of the Residual Flows reference on a protocol, timed as iresnet's StepTimer times its own.

Usage: ``python scripts/reference_steps.py --peer-dir DIR --protocol mnist5k|cifar10-paper --device cpu|cuda
--steps N --batch-size B --out record.json [--seed 0]``; ``scripts/compare_reference.py`` runs it in a
fresh process. The reference's code is imported from ``--peer-dir`` (:mod:`reference_model`).

The loop is ``../shared/peers/run_reference.py``'s: Adam(1e-3, betas 0.9/0.99) with the learning rate
warmed up over 200 steps, dequantized batches of a fresh permutation per epoch, bits/dim loss, gradient
norm clipped to 1, the reference's ``update_lipschitz`` after every step, EMA 0.999. This runner puts
the model on ``--device`` and moves each batch there (the images stay on the CPU, as a data loader's
do); on CUDA each step ends with a synchronization, so that its time is the device's.

Writes ``--out``: ``{"step_s": [...], "batch_size", "world_size": 1, "threads", "parameters",
"peak_rss_mib", "peak_cuda_mib"}``, the record :class:`iresnet.bench.timing.StepTimer` writes, where
``step_s[k]`` is the time between the ends of steps ``k-1`` and ``k`` (for ``k = 0``, from the start of
training) and the CUDA peak counts from the start of training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from reference_model import (
    PROTOCOLS, bits_per_dim, build_model, dequantize, load_reference, normalized_layers, protocol_images,
    update_lipschitz,
)  # fmt: skip


def train_steps(args: argparse.Namespace) -> dict:
    """Trains ``args.steps`` steps; returns the record (without memory)."""
    ref = load_reference(args.peer_dir)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device(args.device)
    train, _ = protocol_images(args.protocol)
    model = build_model(ref, args.protocol, args.batch_size).to(device)
    ema = ref.utils.ExponentialMovingAverage(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    layers = normalized_layers(ref, model)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    ends = [time.perf_counter()]
    while len(ends) <= args.steps:
        order = torch.randperm(len(train))
        for start in range(0, len(train) - args.batch_size + 1, args.batch_size):
            if len(ends) > args.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = 1e-3 * min(1.0, len(ends) / 200)
            x = dequantize(train[order[start : start + args.batch_size]]).to(device)
            bits_per_dim(model, x).mean().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            update_lipschitz(layers)
            ema.apply()
            if on_cuda:
                torch.cuda.synchronize(device)
            ends.append(time.perf_counter())
    return {
        "step_s": [b - a for a, b in zip(ends, ends[1:])],
        "batch_size": args.batch_size,
        "world_size": 1,
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer-dir", required=True, help="the residual-flows checkout")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="mnist5k")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="the record's JSON file")
    args = parser.parse_args()
    record = train_steps(args)
    # Imported after training, so that the reference's process times and peaks are its own.
    from iresnet.bench.memory import peak_cuda_mib, peak_rss_mib

    record.update(peak_rss_mib=peak_rss_mib(), peak_cuda_mib=peak_cuda_mib(args.device))
    args.out.write_text(json.dumps(record))


if __name__ == "__main__":
    main()
