"""The docs run and match the code: every Python block of README.md and docs/api.md executes, every
signature docs/api.md states is the one ``inspect.signature`` reads, and the tables name what ships."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
from pathlib import Path

import torch

import iresnet

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
API = ROOT / "docs" / "api.md"
# Where docs/api.md's example of loading a checkpoint points; the test gives it a real one.
CKPT_PLACEHOLDER = "runs/train/<date>/checkpoints/last.ckpt"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def run_blocks(blocks: list[str], name: str) -> dict:
    """Runs the blocks in order in one namespace, as a reader pastes them one after another."""
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{name}, Python block {i + 1}", "exec"), namespace)
    return namespace


def test_readme_library_example_runs(capsys):
    (block,) = python_blocks(README)
    assert len(block.strip().splitlines()) <= 15  # the front page's example stays short
    namespace = run_blocks([block], "README.md")
    error = float(re.search(r"round trip: ([0-9.e-]+)", capsys.readouterr().out).group(1))
    assert error < 1e-5
    assert namespace["model"].sample(8).shape == (8, 2)


def test_api_examples_run(tmp_path, monkeypatch, tiny_ckpt):
    monkeypatch.chdir(tmp_path)  # the examples write runs/ and cache/ under the working directory
    blocks = [code.replace(CKPT_PLACEHOLDER, str(tiny_ckpt)) for code in python_blocks(API)]
    assert sum(CKPT_PLACEHOLDER in code for code in python_blocks(API)) == 1
    if importlib.util.find_spec("onnxruntime") is None:  # the onnx extra's example needs it
        blocks = [code for code in blocks if "import onnxruntime" not in code]
    namespace = run_blocks(blocks, "docs/api.md")
    assert namespace["metrics"]["test/nll"] < 10  # the command-line function's run
    assert namespace["samples"].shape[0] == 16  # from the loaded checkpoint


# ---------------------------------------------------------------------------- signatures
# A signature claim is a code span ``name(params)`` that opens a heading, a table row or a list
# item of docs/api.md (spans inside prose are usage, e.g. ``fc_branch(..., context=...)``); a
# table row's bare method name belongs to the class of the heading above it. ``...`` in params
# means "and others": the named ones are still checked, in any order.
ROOMS = ["iresnet", "iresnet.lipschitz", "iresnet.flows", "iresnet.logdet", "iresnet.inverse", "iresnet.models",
         "iresnet.models.blocks", "iresnet.data", "iresnet.training", "iresnet.quality", "iresnet.metrics",
         "iresnet.visualize", "iresnet.ops", "iresnet.runtime"]  # fmt: skip
# The strategies' call conventions, written with the names the docs give an instance.
INSTANCES = {"est": ("iresnet.logdet.base", "LogDetEstimator"), "solver": ("iresnet.inverse", "InverseSolver")}
SPAN = re.compile(r"`([A-Za-z_][\w.]*)\(([^`]*?)\)(?: -> [^`]*)?`")


def resolve(name: str, owner: object = None):
    if owner is not None and callable(getattr(owner, name, None)):
        return getattr(owner, name)
    if name in INSTANCES:
        module, cls = INSTANCES[name]
        return getattr(importlib.import_module(module), cls).__call__
    for prefix in ("", "iresnet."):
        module, _, attr = (prefix + name).rpartition(".")
        if module:
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError):
                pass
    for room in ROOMS:
        obj = getattr(importlib.import_module(room), name, None)
        if obj is not None:
            return obj
    return getattr(owner, name, None)


def claims() -> list[tuple[int, str, str, object]]:
    found, owner = [], None
    for number, line in enumerate(API.read_text().splitlines(), 1):
        heading = line.startswith("#")
        if heading or re.match(r"^(\| |\* |- )`", line):
            spans = [m for m in (SPAN.finditer(line) if heading else [SPAN.match(line, line.index("`"))]) if m]
            if line.startswith("### "):
                owner = resolve(spans[0].group(1)) if spans else None
            found += [(number, m.group(1), m.group(2), owner) for m in spans]
    return found


def parameters(obj) -> list[inspect.Parameter]:
    """The named parameters a call takes, and whether that list is complete. A class whose
    ``__init__`` passes ``*args, **kwargs`` on takes its base class's too."""
    named: list[inspect.Parameter] = []
    for target in [c.__init__ for c in inspect.getmro(obj) if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]:
        params = [p for p in inspect.signature(target).parameters.values() if p.name != "self"]
        forwards = any(p.kind == p.VAR_KEYWORD for p in params)
        named += [p for p in params if (p.kind != p.VAR_POSITIONAL or not forwards) and p.kind != p.VAR_KEYWORD
                  and p.name not in {n.name for n in named}]  # fmt: skip
        if not forwards or target.__qualname__ == "Module.__init__":  # torch's base takes nothing of its own
            break
    return named


def same_default(written: str, code: object) -> bool:
    try:
        value = eval(written, {"torch": torch, "inf": math.inf, "Path": Path})
    except Exception:
        return written.replace('"', "'").replace(" ", "") == repr(code).replace(" ", "")
    return value == code or (isinstance(code, tuple) and list(code) == value) or (isinstance(value, tuple) and list(value) == code)


def split_params(text: str) -> list[str]:
    """``a, b=(1, 2), c="x"`` -> ``["a", "b=(1, 2)", 'c="x"']`` (commas inside brackets kept)."""
    params, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            params.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in [*params, current.strip()] if p]


def documented_mismatches(name: str, text: str, owner: object) -> list[str]:
    obj = resolve(name, owner)
    if obj is None or not callable(obj):
        return [f"{name}: no such public name"]
    actual = parameters(obj)
    by_name = {p.name: p for p in actual}
    written = split_params(text)
    problems = []
    if "..." not in written and [w.split("=")[0].lstrip("*") for w in written] != list(by_name):
        problems.append(f"{name}: documented ({text}) but the code takes ({', '.join(map(str, actual))})")
    for w in written:
        key, _, default = w.partition("=")
        key = key.lstrip("*")
        if w == "..." or key not in by_name:
            problems += [] if w == "..." else [f"{name}: no parameter {key!r}"]
        elif default and by_name[key].default is inspect.Parameter.empty:
            problems.append(f"{name}: {key} has no default in the code, {default} in the docs")
        elif default and not same_default(default, by_name[key].default):
            problems.append(f"{name}: {key}={default} in the docs, {by_name[key].default!r} in the code")
    return problems


def test_api_signatures_match_the_code():
    found = claims()
    assert len(found) > 40  # the parser still finds the reference's signatures
    problems = [f"docs/api.md:{line}: {p}" for line, name, text, owner in found for p in documented_mismatches(name, text, owner)]
    assert not problems, "\n".join(problems)


def test_the_exports_table_names_every_export():
    rows = [line for line in API.read_text().splitlines() if line.startswith("| `iresnet.")]
    listed = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[3])}
    assert listed == set(iresnet.__all__)


# ---------------------------------------------------------------------------- README's tables
def test_readme_test_command_is_what_ci_runs():
    command = re.search(r"pip install -e \"\.\[test\]\" && (python -m pytest[^#\n]*?)\s*#", README.read_text()).group(1)
    assert command.strip() in (ROOT / ".ci" / "run").read_text()


def test_readme_names_every_experiment_and_notebook():
    text = README.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `experiment` |"))
    assert set(re.findall(r"`(\w+)`", row.split("|")[2])) == {p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml")}
    listed = set(re.findall(r"\(notebooks/(\w+)\.ipynb\)", text))
    assert {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")} <= listed

