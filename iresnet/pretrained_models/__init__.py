"""Trained models that ship with iresnet and load offline: ``iresnet.pretrained("mnist5k_small")``.

Each model is one file ``<name>.pt`` beside this module, written by ``scripts/make_pretrained.py``
from a training run: a dict of plain containers and tensors (``torch.load(..., weights_only=True)``
reads it)::

    {"format": FORMAT, "name": str,
     "hyper_parameters": the FlowLightningModule's (model, data, n_bits, ... as trained),
     "state_dict": the evaluation model's weights (the run's weight average, spectral norms converged)}

``cards.json`` holds each model's card: its data, training command, commit, test bits/dim with
standard error, sample scores, the file's size and sha256 (docs/pretrained.md shows them).

The package is named ``pretrained_models`` and not ``pretrained`` so that importing it never
replaces the function :func:`pretrained` on the ``iresnet`` package.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import torch

from iresnet.models import FlowModel
from iresnet.training import FlowLightningModule
from iresnet.training.checkpoint import CheckpointError, load_module, read_checkpoint, state_mismatch

FORMAT = "iresnet-pretrained-1"
HERE = Path(__file__).resolve().parent
NAMES = ("mnist5k_small", "mnist5k_quality", "fashion_mnist")


def names() -> tuple[str, ...]:
    """The shipped models' names."""
    return NAMES


def pretrained_path(name: str) -> Path:
    """The file of the shipped model ``name``; ``ValueError`` listing the names for any other."""
    if name not in NAMES:
        raise ValueError(f"unknown pretrained model {name!r}; the shipped ones are {', '.join(NAMES)}.")
    path = HERE / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"The pretrained model file {str(path)!r} is missing from this installation; reinstall iresnet "
            "or regenerate it with scripts/make_pretrained.py (docs/pretrained.md)."
        )
    return path


@cache
def cards() -> dict[str, dict[str, Any]]:
    """Every shipped model's card (``cards.json``), by name."""
    return json.loads((HERE / "cards.json").read_text())


def card(name: str) -> dict[str, Any]:
    """The card of the shipped model ``name``: data, config, commit, test bits/dim ± SE, sample
    scores, size and sha256 of its file."""
    pretrained_path(name)  # the name check
    return cards()[name]


def load_pretrained_module(name: str, map_location: str | torch.device = "cpu") -> FlowLightningModule:
    """The :class:`FlowLightningModule` of the shipped model ``name``, in eval mode.

    The file holds only the evaluation weights: the module's trained model and its weight average
    both get them, so ``weights=raw`` and ``weights=ema`` evaluate the same model.
    """
    path = pretrained_path(name)
    saved = read_checkpoint(path, map_location)
    if saved.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a pretrained model of format {FORMAT}; reinstall iresnet.")
    module = FlowLightningModule(**saved["hyper_parameters"])
    weights = {f"model.{k}": v for k, v in saved["state_dict"].items()}
    weights.update({f"ema.module.{k}": v for k, v in saved["state_dict"].items()})
    weights["ema.n_averaged"] = module.ema.n_averaged
    if (mismatch := state_mismatch(weights, module)) is not None:
        raise CheckpointError(f"{str(path)!r} does not match the model it describes ({mismatch}); reinstall iresnet.")
    module.load_state_dict(weights)
    return module.to(map_location).eval()


def pretrained(name: str, map_location: str | torch.device = "cpu") -> FlowModel:
    """The shipped model ``name`` (one of :data:`NAMES`) as a :class:`FlowModel` in eval mode, its
    spectral norms converged: ``model.log_prob(x)``, ``model.sample(n)``, ``model.inverse(z)``.

    Images are ``(B, 1, 28, 28)`` in ``[0, 1]`` (dequantized 8-bit); ``mnist5k_quality`` is
    class-conditional and takes the labels as context. Offline: the weights ship in the package.
    """
    return load_pretrained_module(name, map_location).prepare_eval_model()


def module_from(ckpt_path: str | None, pretrained_name: str | None,
                map_location: str | torch.device = "cpu") -> FlowLightningModule:  # fmt: skip
    """The module of a training checkpoint (``ckpt_path``) or of a shipped model (``pretrained_name``),
    as the commands take them: exactly one of the two."""
    if ckpt_path and pretrained_name:
        raise ValueError(
            f"both ckpt_path={ckpt_path} and pretrained={pretrained_name} were given; pass only one of them."
        )
    if pretrained_name:
        return load_pretrained_module(pretrained_name, map_location)
    if not ckpt_path:
        raise ValueError(
            "ckpt_path is required: pass ckpt_path=<a .ckpt file written by iresnet-train>, or pretrained=NAME "
            f"for a shipped model ({', '.join(NAMES)})."
        )
    return load_module(ckpt_path, map_location)


__all__ = ["FORMAT", "NAMES", "card", "cards", "load_pretrained_module", "module_from", "names", "pretrained",
           "pretrained_path"]  # fmt: skip
