"""scripts/compare_reference.py: iresnet beside the Residual Flows reference, on a tiny protocol run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPTS = ROOT / "scripts"
# The reference's checkout: PEER_DIR, else ../shared/peers/residual-flows beside the repository.
PEER_DIR = Path(os.environ.get("PEER_DIR", ROOT.parent / "shared" / "peers" / "residual-flows"))
needs_peer = pytest.mark.skipif(not (PEER_DIR / "resflows").is_dir(), reason=f"no reference code at {PEER_DIR}")


@pytest.fixture
def compare(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import compare_reference

    return compare_reference


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "compare_reference.py"), *args], capture_output=True, text=True, cwd=tmp_path
    )


def test_bad_arguments_are_named(compare, tmp_path, capsys):
    peer = tmp_path / "peer"
    (peer / "resflows").mkdir(parents=True)
    taken = tmp_path / "taken.json"
    taken.write_text("{}")
    base = ["--protocol", "mnist5k", "--device", "cpu", "--batch-size", "4", "--out", str(tmp_path / "c.json")]
    assert compare.parse_args([*base, "--peer-dir", str(peer), "--steps", "4"]).warmup_steps == 2
    for args, message in [
        (["--peer-dir", str(tmp_path), "--steps", "4"], "no reference code at"),
        (["--peer-dir", str(peer), "--steps", "1"], "--steps must be at least 2"),
        (["--peer-dir", str(peer), "--steps", "4", "--warmup-steps", "4"], "leaves no timed steps"),
        (["--peer-dir", str(peer), "--steps", "4", "--out", str(taken)], "already exist"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            compare.parse_args([*base, *args])
        assert exit_.value.code == 2 and message in capsys.readouterr().err, args


def _record(step_s: list[float], batch_size: int, peak_rss: float, parameters: int) -> dict:
    """A run's record as StepTimer and reference_steps.py write it, plus the wall time."""
    return {"step_s": step_s, "batch_size": batch_size, "world_size": 1, "threads": 2, "parameters": parameters,
            "peak_rss_mib": peak_rss, "peak_cuda_mib": None, "wall_s": 10 * sum(step_s), "command": ["x"]}  # fmt: skip


def test_summary_and_table_give_steady_state_ratios(compare):
    ref = compare.summary([_record([9.0, 2.0, 2.0, 4.0], 8, 1000.0, 100)], warmup_steps=1)
    ours = compare.summary([_record([5.0, 1.0, 1.0, 1.0], 8, 500.0, 110)], warmup_steps=1)
    assert (ref["images_per_s"], ref["images_per_s_median"], ref["timed_steps"]) == (3.0, 4.0, 3)
    assert (ours["images_per_s"], ours["peak_mib"], ours["wall_s"]) == (8.0, 500.0, 80.0)
    env = {"device_name": "cpu", "cpu_count": 2, "torch": "2", "git": "abc", "load_average": [1.0], "time": "now"}
    result = {"protocol": "mnist5k", "device": "cpu", "batch_size": 8, "steps": 4, "warmup_steps": 1,
              "environment": env, "reference": ref, "iresnet": ours}  # fmt: skip
    rows = {line.split(" | ")[0]: line.split(" | ")[1:] for line in compare.markdown(result).splitlines()}
    assert rows["| parameters"] == ["100", "110", "1.1 |"]
    assert rows["| steady-state images/s (mean step)"] == ["3", "8", "2.67 |"]
    assert rows["| steady-state images/s (median step)"] == ["4", "8", "2 |"]
    assert rows["| whole process, s"] == ["170", "80", "0.471 |"]
    assert rows["| peak RSS, MiB"] == ["1000", "500", "0.5 |"]
    assert "rounds" not in compare.markdown(result)


def test_rounds_alternate_and_pool(compare, tmp_path, monkeypatch):
    """--rounds 3: reference first in rounds 1 and 3, iresnet first in round 2; each side pools
    its timed steps, averages its whole process, keeps its highest peak; one ratio per round."""
    calls = []

    def fake(name, steps, peak):
        def run(args, run_dir):
            calls.append((name, run_dir.name))
            return _record(steps[len([c for c in calls if c[0] == name]) - 1], 8, peak.pop(0), 100)
        return run

    reference = fake("reference", [[9, 4, 4], [9, 2, 2], [9, 3, 3]], [900.0, 1000.0, 950.0])
    monkeypatch.setattr(compare, "run_reference", reference)
    ours = fake("iresnet", [[5, 2, 2], [5, 1, 1], [5, 1, 1]], [500.0, 400.0, 450.0])
    monkeypatch.setattr(compare, "run_iresnet", ours)
    monkeypatch.setattr(compare, "environment", lambda device: {})
    peer = tmp_path / "peer"
    (peer / "resflows").mkdir(parents=True)
    base = ["--peer-dir", str(peer), "--protocol", "mnist5k", "--device", "cpu", "--steps", "3", "--batch-size", "8"]
    args = compare.parse_args([*base, "--warmup-steps", "1", "--rounds", "3", "--out", str(tmp_path / "c.json")])
    result = compare.compare(args, tmp_path)
    assert calls == [("reference", "reference-1"), ("iresnet", "iresnet-1"), ("iresnet", "iresnet-2"),
                     ("reference", "reference-2"), ("reference", "reference-3"), ("iresnet", "iresnet-3")]  # fmt: skip
    ref, ours = result["reference"], result["iresnet"]
    assert (ref["timed_steps"], ref["step_s"], ref["step_s_median"], ref["runs"]) == (6, 3.0, 3.0, 3)
    assert (ours["step_s"], ours["wall_s"], ours["peak_mib"], ref["peak_mib"]) == (4 / 3, 10 * 23 / 3, 500.0, 1000.0)
    assert result["round_ratios"] == [2.0, 2.0, 3.0]
    env = {"device_name": "cpu", "cpu_count": 2, "torch": "2", "git": "abc", "load_average": None, "time": "now"}
    text = compare.markdown({**result, "environment": env})
    assert "3 rounds in alternating order; steady-state ratio of the mean steps per round: 2.00, 2.00, 3.00" in text
    assert "(median 2.00)" in text
    with pytest.raises(SystemExit):
        compare.parse_args([*base, "--rounds", "0", "--out", str(tmp_path / "d.json")])


@pytest.mark.slow
@needs_peer
def test_tiny_protocol_side_by_side(tmp_path):
    args = ["--peer-dir", str(PEER_DIR), "--protocol", "mnist5k", "--device", "cpu", "--steps", "3",
            "--batch-size", "4", "--threads", "1", "--out", "c.json"]  # fmt: skip
    done = _run(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "c.json").read_text())
    assert (tmp_path / "c.md").read_text() in done.stdout
    ref, ours = result["reference"], result["iresnet"]
    assert result["warmup_steps"] == 1 and ref["timed_steps"] == ours["timed_steps"] == 2
    for run in (ref, ours):
        assert run["images_per_s"] > 0 and run["steps"] == 3 and run["threads"] == 1
        assert run["wall_s"] > run["timed_steps"] * run["step_s"]  # the whole process holds the steps
        assert 100 < run["peak_mib"] == run["peak_rss_mib"] and run["peak_cuda_mib"] is None
    # The same architecture: the reference's 3 x 4 blocks of 64 channels and FC end, within 1% of its parameters.
    assert abs(ours["parameters"] / ref["parameters"] - 1) < 0.01
