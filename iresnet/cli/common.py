"""What every command-line entry point shares: where configs live, and how user errors end."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from iresnet.data import DatasetNotFoundError
from iresnet.inverse import InverseConvergenceError

# Lightning's notes that do not apply here: the EMA copy is in eval mode on purpose, and its own
# deprecation notice about torch's pytree API.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")

# Mistakes a user can fix: they end the command with one line and exit code 2, no traceback.
USER_ERRORS = (ValueError, DatasetNotFoundError, FileNotFoundError, FileExistsError, InverseConvergenceError)


def config_dir() -> str:
    """The packaged configs after a plain install; the repository's ``configs/`` in a checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"iresnet's configs were not found next to {package}; reinstall the package.")


def exit_on_user_error(fn: Callable) -> Callable:
    """Turns the errors in ``USER_ERRORS`` into ``error: <message>`` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            cause = user_error_in(err)
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def user_error_in(err: BaseException | None) -> BaseException | None:
    """The user error in ``err`` or its causes (Hydra wraps errors raised while instantiating)."""
    while err is not None:
        if isinstance(err, USER_ERRORS):
            return err
        err = err.__cause__
    return None


def writable_output(path: str | Path, overwrite: bool) -> Path:
    """``path`` with its folder created; refuses to replace an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already exists; choose another out=... or pass overwrite=true to replace it."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_datamodule(cfg, module):
    """The data config given on the command line, else the one recorded in the checkpoint."""
    from hydra.utils import instantiate

    data_cfg = cfg.get("data") or module.hparams.get("data")
    if not data_cfg:
        raise ValueError("The checkpoint records no data config; pass one, e.g. data=mnist5k.")
    return instantiate(data_cfg)
