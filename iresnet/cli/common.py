"""What every command-line entry point shares: where configs live, and how user errors end."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, InstantiationException
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from iresnet.data import DatasetNotFoundError
from iresnet.inverse import InverseConvergenceError
from iresnet.models.onnx import OnnxNotInstalledError
from iresnet.runtime import apply_runtime
from iresnet.training import TrainingDivergedError

# Mistakes a user can fix: they end the command with one line and exit code 2, no traceback.
# Lightning's MisconfigurationException: a trainer setting it refuses (e.g. a fraction of batches below one).
USER_ERRORS = (
    ValueError, DatasetNotFoundError, FileNotFoundError, FileExistsError, InverseConvergenceError,
    TrainingDivergedError, MisconfigurationException, OnnxNotInstalledError,
)  # fmt: skip
_UNKNOWN_TARGET = re.compile(r"Error locating target '([^']+)'.*?(?:full_key: (\S+))?$", re.DOTALL)


def config_dir() -> str:
    """The packaged configs after a plain install; the repository's ``configs/`` in a checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"iresnet's configs were not found next to {package}; reinstall the package.")


def one_line(message: object) -> str:
    return " ".join(str(message).split())


def check_overrides(config_name: str, overrides: list[str]) -> DictConfig | None:
    """Composes ``config_name`` with the command line's ``overrides`` before Hydra runs the command,
    so that an override Hydra cannot apply (an unknown key or group option, a malformed value)
    ends with one ``error:`` line and exit code 2 instead of Hydra's report and exit code 1.

    Returns the composed config; None for command lines with Hydra's own flags (``--cfg``,
    ``-m``, ...), which are left to Hydra.
    """
    if any(arg.startswith("-") for arg in overrides):
        return None
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        message = one_line(err).split(" Config search path:")[0]
        hint = " (add a key with +key=value; --cfg job lists the config)" if "not in struct" in message else ""
        print(f"error: {message}{hint}", file=sys.stderr)
        sys.exit(2)
    finally:
        GlobalHydra.instance().clear()


def apply_runtime_config(cfg: DictConfig) -> list[str]:
    """Applies the command's ``runtime`` group (threads, warning filters) and prints what it did.

    Called first in every command's ``main()``; importing iresnet changes no process setting.
    Only the process of global rank zero prints (Lightning's ``rank_zero_only``, which reads the
    rank that torchrun, SLURM or Lightning's own launcher gives).
    """
    applied = apply_runtime(cfg.get("runtime") or {})
    rank_zero_only(print)("runtime: " + "; ".join(applied), flush=True)
    return applied


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
            print(f"error: {one_line(cause)}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def hydra_command(task: Callable[[DictConfig], Any], config_name: str) -> Callable[[], None]:
    """A command's ``main`` (the console script ``iresnet-<config_name>`` calls it):
    Hydra's application of ``configs/<config_name>.yaml`` running ``task`` after the config's
    ``runtime`` settings (:func:`apply_runtime_config`), with the overrides checked first
    (:func:`check_overrides`) and user errors ending as one ``error:`` line and exit code 2
    (:func:`exit_on_user_error`)."""

    def run(cfg: DictConfig) -> Any:
        apply_runtime_config(cfg)
        return task(cfg)

    # Hydra names its job after the task function's module: the job's log is <config_name>.log,
    # and --help names the app iresnet-<config_name> (configs/hydra/default.yaml).
    run.__module__ = config_name
    app = hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)(exit_on_user_error(run))

    @functools.wraps(task)
    def main() -> None:  # the console script exits with main()'s value: None is success
        check_overrides(config_name, sys.argv[1:])
        app()

    return main


def user_error_in(err: BaseException | None) -> BaseException | None:
    """The user error in ``err`` or its causes (Hydra wraps errors raised while instantiating).

    Two config mistakes that Hydra and OmegaConf report in their own words are reworded: a
    ``_target_`` naming no class, and a required value (``???``) left unset.
    """
    while err is not None:
        if isinstance(err, USER_ERRORS):
            return err
        if isinstance(err, InstantiationException) and (match := _UNKNOWN_TARGET.match(str(err))):
            target, key = match.groups()
            return ValueError(
                f"unknown _target_ {target!r}{f' (config key {key})' if key else ''}: no such class or "
                "function. Check its spelling, or pick a config of its group, e.g. "
                "model/logdet=roulette or model/inverse=anderson."
            )
        if isinstance(err, MissingMandatoryValue):
            return ValueError(f"{err.full_key} is required: pass {err.full_key}=... on the command line.")
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
    """The data config given on the command line, else the one recorded in the checkpoint.

    Raises ``ValueError`` if the data's images do not fit the checkpoint's model.
    """
    from hydra.utils import instantiate

    data_cfg = cfg.get("data") or module.hparams.get("data")
    if not data_cfg:
        raise ValueError("The checkpoint records no data config; pass one, e.g. data=mnist5k.")
    datamodule = instantiate(data_cfg)
    expected = getattr(module.eval_model, "input_shape", None)
    dims = getattr(datamodule, "dims", None)
    if expected is not None and dims is not None and tuple(dims) != tuple(expected):
        raise ValueError(
            f"The checkpoint's model takes images of shape {tuple(expected)}, but the data "
            f"({data_cfg.get('_target_', 'data')}) have {tuple(dims)}; pick the data it was trained on "
            "(leave data= out to use the one recorded in the checkpoint)."
        )
    return datamodule


def class_labels(model: nn.Module, label: object, n: int) -> tuple[torch.Tensor | None, int | None]:
    """The labels ``label=`` asks for, for ``n`` samples or images of ``model``, and the grid's
    row length: a class index ``k`` gives ``n`` times ``k``; ``all`` gives each class ``n`` times,
    one row per class. None for an unconditional model (which must not be given a label).

    ``ValueError`` for a label given to a model without classes, one out of range, or no label
    for a class-conditional model where ``all`` cannot apply (``n`` is None).
    """
    num_classes = getattr(model, "num_classes", None) if getattr(model, "class_conditional", False) else None
    if num_classes is None:
        if label is not None:
            raise ValueError(
                f"label={label} was given, but this checkpoint's model is not class-conditional; leave label= out "
                "(or train one with experiment=mnist5k_conditional)."
            )
        return None, None
    device = next(model.parameters()).device
    if label is None or label == "all":
        return torch.arange(num_classes, device=device).repeat_interleave(n), n
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
        raise ValueError(f"label must be a class in 0..{num_classes - 1} or 'all', got {label!r}.")
    return torch.full((n,), label, device=device), None


def require_converged(model: nn.Module) -> None:
    """Raises :class:`InverseConvergenceError` if a block's latest inverse solve did not converge.

    Solvers configured with ``on_failure="warn"`` return their last iterate; a command must not
    write that as if it were the inverse.
    """
    for name, block in model.named_modules():
        stats = getattr(block, "last_inverse_stats", None)
        if stats is not None and not stats.converged:
            raise InverseConvergenceError(
                f"Inverting block {name!r} did not converge: max residual |x + g(x) - y| = "
                f"{stats.residual:.3g} after {stats.iterations} iterations, so nothing was written. "
                "Raise the solver's iterations (max_iter=...) or use a checkpoint whose "
                "val/bounds_below_one is 1.",
                stats,
            )


# torch.compile's modes; "reduce-overhead" replays CUDA graphs where the shapes allow.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_models(*models: nn.Module, mode: str | None = None) -> None:
    """``torch.compile`` each model's forward in place (``nn.Module.compile``: checkpoints keep their
    keys), in ``mode`` (one of :data:`COMPILE_MODES`; None: torch's default). Estimators
    graph-break where they must run eagerly: the memory-efficient estimator (its draw of the number
    of terms inside, so training graphs do not depend on it) and, without it, the roulette's draw,
    where each number of terms is a graph of its own up to ``torch._dynamo.config.recompile_limit``."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)} or null, got {mode!r}.")
    for model in models:
        model.compile(mode=mode)


def compile_summary() -> str:
    """What ``torch.compile`` did in this process: graphs captured and graph breaks."""
    counters = torch._dynamo.utils.counters
    breaks = sum(counters["graph_break"].values())
    return f"compiled {counters['stats']['unique_graphs']} graphs, {breaks} graph breaks"

