"""Refactoring configs changes no run: every command's and every experiment's resolved config
equals the snapshot in fixtures/resolved_configs.json.

After an intended change of a setting, rewrite the snapshot (and say why in the commit):
``python tests/test_config_snapshot.py``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from iresnet.cli.common import config_dir
from iresnet.cli.compose import compose_config

SNAPSHOT = Path(__file__).with_name("fixtures") / "resolved_configs.json"
EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))
COMMANDS = ["train", "eval", "sample", "invert", "ood", "bench"]
# Environment variables that paths.* read: fixed, so the snapshot does not depend on the shell.
ENVIRONMENT = {"IRESNET_ROOT": "/root", "IRESNET_DATA": "/data", "IRESNET_CACHE": "/cache"}
_NOW = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}")


def cases() -> dict[str, list[str]]:
    """Case name -> overrides: every top-level config, then train.yaml with every experiment."""
    return {**{name: [] for name in COMMANDS}, **{f"train experiment={e}": [f"experiment={e}"] for e in EXPERIMENTS}}


def resolved(case: str) -> dict[str, Any]:
    """The case's config as plain data, every interpolation resolved, the run's timestamp masked."""
    name, overrides = case.split()[0], cases()[case]
    cfg = compose_config(name, overrides, output_dir="/run")
    return json.loads(_NOW.sub("<now>", json.dumps(OmegaConf.to_container(cfg, resolve=True))))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


@pytest.fixture(autouse=True)
def fixed_environment(monkeypatch):
    for key, value in ENVIRONMENT.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("case", list(cases()))
def test_resolved_config_matches_the_snapshot(case):
    snapshot = json.loads(SNAPSHOT.read_text())
    assert case in snapshot, f"{case!r} is new: add it to the snapshot (python {__file__})"
    before = flatten(snapshot[case])
    after = flatten(resolved(case))
    changed = {k: (before.get(k, "<absent>"), after.get(k, "<absent>"))
               for k in before.keys() | after.keys() if before.get(k, "<absent>") != after.get(k, "<absent>")}  # fmt: skip
    assert not changed, f"{case}: settings changed (snapshot, now): {changed}"


def test_every_snapshot_case_still_exists():
    assert set(json.loads(SNAPSHOT.read_text())) == set(cases())


if __name__ == "__main__":
    import os

    os.environ.update(ENVIRONMENT)
    SNAPSHOT.write_text(json.dumps({case: resolved(case) for case in cases()}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}", file=sys.stderr)
