"""Safe loading of training checkpoints (``weights_only=True``) with errors that say what is wrong."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from iresnet.training.module import FlowLightningModule


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, unsafe, or of another model."""


# Every file torch.save has written since PyTorch 1.6 (and so every Lightning checkpoint) is a zip archive.
_ZIP_MAGIC = b"PK\x03\x04"


def _refused_global(err: Exception) -> str:
    """What the file asked the unpickler to build, as named in torch's refusal."""
    match = re.search(r"GLOBAL (\S+)", str(err))
    return f"it asks for {match.group(1)}" if match else type(err).__name__


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Loads a checkpoint file as plain tensors and containers; never executes code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not exist. Pass the path printed by iresnet-train, "
            "e.g. ckpt_path=runs/train/<date>/checkpoints/last.ckpt."
        )
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head != _ZIP_MAGIC:
        raise CheckpointError(
            f"{str(path)!r} is not a checkpoint: torch.save writes zip archives and this file "
            f"{'is empty' if not head else 'is something else'}; pass a .ckpt file written by iresnet-train."
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} was refused: it holds objects other than tensors and plain "
            f"containers, which could run code when loaded ({_refused_global(err)}). Nothing from it "
            "was executed; use a checkpoint written by iresnet-train."
        ) from err
    except Exception as err:  # zip, storage and unpickling failures of a damaged file
        detail = str(err).split(". ")[0].splitlines()[0] if str(err) else "no detail"
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is truncated or corrupted ({type(err).__name__}: {detail}); "
            "use another checkpoint, e.g. last.ckpt or the best epoch file in the same folder."
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(
            f"{str(path)!r} is not an iresnet training checkpoint (no state_dict / hyper_parameters); "
            "pass a .ckpt file written by iresnet-train."
        )
    return ckpt


def state_mismatch(saved: dict, module: FlowLightningModule) -> str | None:
    """How the tensors of a checkpoint's ``state_dict`` differ from ``module``'s, or None."""
    current = module.state_dict()
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    reshaped = [f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}" for k, v in current.items()
                if k in saved and saved[k].shape != v.shape]  # fmt: skip
    if not (missing or unexpected or reshaped):
        return None
    return f"missing {missing[:3]}, unexpected {unexpected[:3]}, shapes {reshaped[:3]}"


def resumable_checkpoint(path: str | Path, module: FlowLightningModule) -> dict:
    """The checkpoint at ``path``; :class:`CheckpointError` unless it is safe and of ``module``'s model.

    Run before ``trainer.fit(ckpt_path=...)`` so a wrong file ends with a message naming the
    mismatch instead of a traceback from deep inside Lightning.
    """
    ckpt = read_checkpoint(path)
    if (mismatch := state_mismatch(ckpt["state_dict"], module)) is not None:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} was written by a different model or config, so training cannot "
            f"resume from it ({mismatch}). Resume with the model settings it was trained with (see "
            ".hydra/config.yaml in its run directory), or start a new run without ckpt_path."
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
    if (mismatch := state_mismatch(ckpt["state_dict"], module)) is not None:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not match the model it describes ({mismatch}). It was "
            "written by a different model or config, or edited."
        )
    module.load_state_dict(ckpt["state_dict"])
    return module.to(map_location).eval()
