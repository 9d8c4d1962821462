"""The console commands' entry points: check the command line, settle the process's environment,
then import and run the command.

Nothing heavy is imported here (no torch, no Lightning): a setting that glibc reads only when a
process starts (``runtime.malloc: hugepages``, :func:`iresnet.runtime.hugepages_environment`)
is applied by starting the command once more with it, and that costs a fraction of a second
only before torch is imported. With ``runtime.gc: freeze`` the command's modules are imported
under :func:`iresnet.runtime.frozen_imports`, so that the garbage collector skips their objects.
``python -m iresnet.cli.<command>`` and the modules' ``main`` skip these steps and say so.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from iresnet.runtime import frozen_imports, hugepages_environment


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

    Returns the composed config (shared: read it, do not change it); None for command lines with
    Hydra's own flags (``--cfg``, ``-m``, ...), which are left to Hydra. A command line is composed
    once per process: the launcher and the command's ``main`` both check it.
    """
    if any(arg.startswith("-") for arg in overrides):
        return None
    return _composed(config_dir(), config_name, tuple(overrides))


@functools.cache
def _composed(directory: str, config_name: str, overrides: tuple[str, ...]) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=directory, version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        message = one_line(err).split(" Config search path:")[0]
        hint = " (add a key with +key=value; --cfg job lists the config)" if "not in struct" in message else ""
        print(f"error: {message}{hint}", file=sys.stderr)
        sys.exit(2)
    finally:
        GlobalHydra.instance().clear()


def restart_environment(runtime: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to start the command in afresh for its ``runtime`` settings, or None
    when the current process already has what they need (or cannot get it)."""
    if runtime.get("malloc") != "hugepages":
        return None
    return hugepages_environment(environ)


def command(module: str, config_name: str) -> Callable[[], Any]:
    """The console entry point of ``iresnet.cli.<module>``'s ``main`` for ``configs/<config_name>``."""

    def main() -> Any:
        cfg = check_overrides(config_name, sys.argv[1:])
        runtime = {} if cfg is None else cfg.get("runtime") or {}
        environ = restart_environment(runtime, os.environ)
        if environ is not None and sys.executable:  # an embedded interpreter has no executable to start
            sys.stdout.flush()
            sys.stderr.flush()
            # The same interpreter, options and arguments (sys.orig_argv), with the new environment.
            os.execve(sys.executable, sys.orig_argv, environ)
        with frozen_imports() if runtime.get("gc") == "freeze" else nullcontext():
            command_module = importlib.import_module(f"iresnet.cli.{module}")
        return command_module.main()

    return main


train = command("train", "train")
evaluate = command("eval", "eval")
sample = command("sample", "sample")
invert = command("invert", "invert")
bench = command("bench", "bench")
