"""The Residual Flows reference trained on the mnist5k protocol, evaluated after chosen epochs.

Usage: ``PEER_DIR=../shared/peers/residual-flows python scripts/reference_epochs.py [--seed 0]
[--eval-at 5,10,20] [--device cpu] [--threads 2] [--deadline SECONDS] [--save-states DIR]``.

The training loop is ``../shared/peers/run_reference.py``'s for the mnist5k protocol (the reference's
code is imported from ``PEER_DIR``, not copied): the same data split, model, optimizer, warm-up,
clipping, ``update_lipschitz`` after every step and 0.999 EMA. After each epoch in ``--eval-at`` it
prints one JSON line with the test bits/dim (``torch.manual_seed(1234)`` before each evaluation, as
the runner does) of the raw and the EMA weights, each

- ``as_evaluated``: as the reference evaluates, after its ``update_lipschitz``, whose power
  iteration stops when ``||u - u_old|| / sqrt(n) < atol + rtol * max(u)``; for a convolution's
  ``n = C H W`` vector that stops far from convergence, so layers can exceed ``coeff``;
- ``exact_norms``: with every layer divided by its operator's exact norm (restarted Lanczos in
  float64 to ``update_spectral_norms``' tolerance, :func:`iresnet.lipschitz.top_right_singular_vector`),
  as iresnet evaluates;
- ``lipschitz_as_evaluated``: per kind of layer, mean and max of ``||W||_2 / max(1, sigma / coeff)``,
  the Lipschitz constant each layer had in the ``as_evaluated`` figure.

Training continues unchanged after each evaluation (the RNG state is restored). ``--deadline``
stops before an epoch that would end later than that many seconds after the start.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from iresnet.lipschitz import top_right_singular_vector
from reference_model import (
    bits_per_dim, build_model, dequantize, load_reference, normalized_layers, protocol_images, update_lipschitz,
)  # fmt: skip

BATCH = 64


def evaluate_bpd(model, test: torch.Tensor) -> tuple[float, float]:
    torch.manual_seed(1234)
    model.eval()
    with torch.no_grad():
        bpd = torch.cat([bits_per_dim(model, dequantize(xb)) for xb in test.split(200)])
    model.train()
    return round(bpd.mean().item(), 4), round(bpd.std().item() / math.sqrt(len(bpd)), 4)


@torch.no_grad()
def set_exact_norms(model, ref) -> dict[str, dict[str, float]]:
    """Sets every normalized layer's ``(u, v)`` to its operator's top singular pair (so its ``sigma``
    is the exact norm); returns the Lipschitz constants the layers had before, by kind."""
    base_layers = ref.base_layers
    kinds: dict[str, list[float]] = {}
    for layer in normalized_layers(ref, model):
        weight = layer.weight.detach().double()
        if isinstance(layer, base_layers.InducedNormLinear) or layer.kernel_size == (1, 1):
            kind = "linear" if isinstance(layer, base_layers.InducedNormLinear) else "1x1"
            matrix = weight.view(weight.shape[0], -1)

            def forward(x, matrix=matrix):
                return matrix @ x

            def gram(x, matrix=matrix):
                return matrix.T @ (matrix @ x)
        else:
            kind = "3x3"
            in_shape = (1, layer.in_channels, *(int(s) for s in layer.spatial_dims))

            def forward(x, weight=weight, layer=layer, in_shape=in_shape):
                return F.conv2d(x.view(in_shape), weight, stride=layer.stride, padding=layer.padding).flatten()

            def gram(x, weight=weight, layer=layer, in_shape=in_shape):
                image = F.conv2d(x.view(in_shape), weight, stride=layer.stride, padding=layer.padding)
                return F.conv_transpose2d(image, weight, stride=layer.stride, padding=layer.padding).flatten()

        v = layer.v.double()
        stored = torch.dot(layer.u.double(), forward(v)).item()
        v, _, _ = top_right_singular_vector(gram, v)  # update_spectral_norms' tolerance
        image = forward(v)
        sigma = image.norm().item()
        kinds.setdefault(kind, []).append(sigma / max(1.0, stored / layer.coeff))
        layer.u.copy_((image / sigma).float().view_as(layer.u))
        layer.v.copy_(v.float().view_as(layer.v))
    return {
        k: {"n": len(x), "mean": round(float(np.mean(x)), 4), "max": round(float(np.max(x)), 4)} for k, x in kinds.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer-dir", default=os.environ.get("PEER_DIR", "../shared/peers/residual-flows"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-at", default="5,10,20", help="epochs after which to evaluate, comma-separated")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--deadline", type=float, default=math.inf, help="seconds; stop before an epoch that would end later"
    )
    parser.add_argument("--save-states", type=Path, help="folder for the raw and EMA state dicts at each evaluation")
    args = parser.parse_args()
    if not Path(args.peer_dir, "resflows").is_dir():
        sys.exit(f"error: no reference code at {args.peer_dir}/resflows; pass --peer-dir or set PEER_DIR.")
    start = time.time()
    ref = load_reference(args.peer_dir)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train, test = (images.to(device) for images in protocol_images("mnist5k"))
    model = build_model(ref, "mnist5k", BATCH).to(device)
    ema = ref.utils.ExponentialMovingAverage(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    normalized = normalized_layers(ref, model)

    eval_at = sorted(int(e) for e in args.eval_at.split(","))
    step, epoch_seconds, train_start = 0, None, time.time()
    model.train()
    for epoch in range(1, eval_at[-1] + 1):
        if epoch_seconds is not None and time.time() - start + 1.1 * epoch_seconds > args.deadline:
            print(json.dumps({"seed": args.seed, "stopped_before_epoch": epoch}), flush=True)
            break
        epoch_start = time.time()
        order = torch.randperm(len(train))
        for b in range(0, len(train) - BATCH + 1, BATCH):
            for group in optimizer.param_groups:
                group["lr"] = 1e-3 * min(1.0, (step + 1) / 200)
            x = train[order[b : b + BATCH].to(device)]
            bits_per_dim(model, dequantize(x)).mean().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            update_lipschitz(normalized)
            ema.apply()
            step += 1
        epoch_seconds = time.time() - epoch_start
        progress = {"epoch": epoch, "steps": step, "epoch_s": round(epoch_seconds, 1)}
        print(json.dumps(progress), file=sys.stderr, flush=True)
        if epoch not in eval_at:
            continue
        rng = torch.get_rng_state(), (torch.cuda.get_rng_state() if device.type == "cuda" else None)
        result = {"seed": args.seed, "epoch": epoch, "steps": step, "train_s": round(time.time() - train_start, 1)}
        for weights in ("raw", "ema"):
            if weights == "ema":
                ema.swap()
            update_lipschitz(normalized)
            result[f"{weights}_as_evaluated"] = evaluate_bpd(model, test)
            if args.save_states:
                args.save_states.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), args.save_states / f"seed{args.seed}_epoch{epoch}_{weights}.pt")
            exact = copy.deepcopy(model)
            result[f"{weights}_lipschitz_as_evaluated"] = set_exact_norms(exact, ref)
            result[f"{weights}_exact_norms"] = evaluate_bpd(exact, test)
            if weights == "ema":
                ema.swap()
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state(rng[1])
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
