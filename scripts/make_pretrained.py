"""Writes the pretrained models shipped in iresnet/pretrained_models/ from training runs: each
run's weight average (spectral norms converged) with its model config, and cards.json.

    python scripts/make_pretrained.py --runs runs --commit <commit the runs were trained at>

expects runs/<name>/ for every shipped name, each an iresnet-train run directory (with
checkpoints/last.ckpt, metrics.json and .hydra/overrides.yaml), made by (docs/pretrained.md):

    iresnet-train experiment=mnist5k_small run_dir=runs/mnist5k_small
    iresnet-train experiment=mnist5k_quality trainer.max_epochs=10 run_dir=runs/mnist5k_quality
    iresnet-train experiment=fashion_mnist_small run_dir=runs/fashion_mnist
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
import yaml

from iresnet.pretrained_models import FORMAT, HERE, NAMES
from iresnet.training.checkpoint import load_module, read_checkpoint

# The data config each model evaluates on by default, where it differs from its training run's:
# the Fashion-MNIST model falls back to the shipped 1,000-image subset on machines without the data.
DATA_TARGET = {"fashion_mnist": "iresnet.data.fashion_subset.fashion_mnist_or_subset"}
MAX_BYTES = 10 * 2**20


def training_command(run: Path) -> str:
    """The run's ``iresnet-train`` command line, without the machine's own settings."""
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    kept = [o for o in overrides if not o.startswith(("run_dir=", "runtime."))]
    return " ".join(["iresnet-train", *kept])


def write_model(name: str, run: Path) -> Path:
    """``<name>.pt``: the run's evaluation weights and hyper-parameters, plain tensors and containers."""
    checkpoint = run / "checkpoints" / "last.ckpt"
    hparams = read_checkpoint(checkpoint)["hyper_parameters"]
    if name in DATA_TARGET:
        hparams["data"] = {**hparams["data"], "_target_": DATA_TARGET[name]}
    model = load_module(checkpoint).prepare_eval_model()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    path = HERE / f"{name}.pt"
    torch.save({"format": FORMAT, "name": name, "hyper_parameters": hparams, "state_dict": state}, path)
    if path.stat().st_size > MAX_BYTES:
        raise SystemExit(f"error: {path} is {path.stat().st_size} bytes, over the 10 MiB a shipped model may take.")
    return path


def model_card(name: str, run: Path, path: Path, commit: str) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    hparams = read_checkpoint(run / "checkpoints" / "last.ckpt")["hyper_parameters"]
    scores = {k: v for k, v in metrics.items() if k.startswith(("samples/", "test_images/"))}
    return {
        "data": hparams["data"]["_target_"],  # what it was trained and tested on
        "training_command": training_command(run),
        "trained_at": commit,
        "class_conditional": hparams["model"].get("num_classes") is not None,
        "sample_temperature": hparams.get("sample_temperature", 1.0),
        "test_bpd": metrics["test/bpd"],
        "test_bpd_se": metrics["test/bpd_se"],
        "val_bpd": metrics.get("val/bpd"),
        "sample_scores": scores,
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="folder holding runs/<name>/")
    parser.add_argument("--commit", required=True, help="the commit the runs were trained at")
    args = parser.parse_args()
    cards = {}
    for name in NAMES:
        run = args.runs / name
        path = write_model(name, run)
        cards[name] = model_card(name, run, path, args.commit)
        print(f"wrote {path} ({cards[name]['bytes']:,} bytes, sha256 {cards[name]['sha256'][:16]}...)")
    (HERE / "cards.json").write_text(json.dumps(cards, indent=2) + "\n")
    print(f"wrote {HERE / 'cards.json'}")


if __name__ == "__main__":
    main()
