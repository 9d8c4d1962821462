"""Hydra's compose API, written once: the config a console script would run with, from Python.

Tests, notebooks, the benchmark suite and library users call :func:`compose_config` instead of
repeating ``initialize_config_dir`` / ``compose`` / ``HydraConfig`` by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from iresnet.cli.common import config_dir


def compose_config(name: str, overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """``configs/<name>.yaml`` composed with ``overrides``, as ``iresnet-<name> overrides`` sees it.

    ``paths.output_dir`` is ``${hydra:runtime.output_dir}``, which only a running Hydra
    application resolves: pass ``output_dir`` to give the run its folder (a command that writes
    files needs one). Hydra's global state is saved and restored around the composition, so
    this may run inside a running Hydra application (``iresnet-bench`` composes the protocol's
    training config so).
    """
    hydra_state = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(name, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
        if hydra_state is not None:
            GlobalHydra.instance().initialize(hydra_state)
    if output_dir is not None and "paths" in cfg:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg
