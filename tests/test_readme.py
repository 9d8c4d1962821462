"""The README's library example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_library_section_runs(capsys):
    section = README.read_text().split("## Library", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2  # a residual block, then a density model built from the parts
    namespace: dict = {}
    for code in blocks:  # the second continues the first, as a reader runs them
        exec(compile(code, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "round trip:" in out and "exact:" in out
    error = float(re.search(r"round trip: ([0-9.e-]+)", out).group(1))
    assert error < 1e-5
    assert namespace["samples"].shape == (64, 2) and namespace["model"].conditional


def test_config_group_table_names_every_experiment():
    row = next(line for line in README.read_text().splitlines() if line.startswith("| `experiment` |"))
    listed = set(re.findall(r"`(\w+)`", row.split("|")[2]))
    shipped = {p.stem for p in (README.parent / "configs" / "experiment").glob("*.yaml")}
    assert listed == shipped
