"""Safe loading of training checkpoints (``weights_only=True``) with errors that say what is wrong."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from iresnet.training.module import FlowLightningModule


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, unsafe, or of another model."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Loads a checkpoint file as plain tensors and containers; never executes code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not exist. Pass the path printed by iresnet-train, "
            "e.g. ckpt_path=runs/train/<date>/checkpoints/last.ckpt."
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds objects other than tensors and plain containers, so it was "
            f"refused (weights_only=True never runs code from a file). Details: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is truncated or corrupted ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); use another checkpoint, e.g. last.ckpt "
            "or the best epoch file in the same folder."
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(
            f"{str(path)!r} is not an iresnet training checkpoint (no state_dict / hyper_parameters); "
            "pass a .ckpt file written by iresnet-train."
        )
    return ckpt


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> FlowLightningModule:
    """Rebuilds the :class:`FlowLightningModule` a checkpoint was trained with, weights included."""
    ckpt = read_checkpoint(path, map_location)
    try:
        module = FlowLightningModule(**ckpt["hyper_parameters"])
    except Exception as err:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} describes a model this version of iresnet cannot build: {err}"
        ) from err
    missing, unexpected = module.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not match the model it describes: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}. It was written by a different model or config."
        )
    return module.to(map_location).eval()
