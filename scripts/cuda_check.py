"""Correctness checks for a CUDA machine, before its benchmark figures are trusted.

Usage: ``python scripts/cuda_check.py`` on a machine with a GPU. Prints one JSON line and exits 1
if a check fails. It checks what the CPU test suite cannot reach: LipSwish's first and second
derivatives on the GPU (``gradgradcheck`` in float64), and a protocol model that trains a step
and inverts on the GPU.
"""

import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from iresnet.lipschitz import LipSwish
from iresnet.metrics import bits_per_dim


def lipswish_derivatives(device: torch.device) -> bool:
    act = LipSwish(3).double().to(device).train()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, device=device, requires_grad=True)
    return torch.autograd.gradcheck(act, (x,)) and torch.autograd.gradgradcheck(act, (x,))


def protocol_model(device: torch.device) -> dict[str, float]:
    """A training step (loss finite, gradients finite) and an inversion on the GPU."""
    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mnist5k_bench"])
    torch.manual_seed(0)
    model = instantiate(cfg.model, input_shape=[1, 28, 28]).to(device).train()
    x = torch.rand(16, 1, 28, 28, device=device)
    loss = bits_per_dim(model.log_prob(x), 28 * 28).mean()
    loss.backward()
    grads_finite = all(p.grad is None or bool(p.grad.isfinite().all()) for p in model.parameters())
    model.eval()
    error = (model.reconstruct(x) - x).abs().max().item()
    return {"loss_bpd": loss.item(), "grads_finite": grads_finite, "inversion_max_abs_error": error}


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device here", file=sys.stderr)
        return 1
    device = torch.device("cuda")
    result = {
        "device_name": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "lipswish_gradgradcheck": lipswish_derivatives(device),
        **protocol_model(device),
    }
    ok = (
        result["lipswish_gradgradcheck"] and result["grads_finite"] and result["inversion_max_abs_error"] < 1e-4
    )
    print(json.dumps({**result, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
