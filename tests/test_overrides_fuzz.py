"""No traceback from any override: combinations drawn from the config schema, valid and invalid,
end with exit code 0 or with one ``error:`` line and exit code 2 (property-based, hypothesis).

``IRESNET_FUZZ_EXAMPLES`` raises the number of combinations (CI runs a fixed, derandomized set).
"""

import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability import call_main

# A tiny model and short epochs: every combination trains a few steps, validates and tests.
TINY = [
    "model.n_blocks=[1,1]", "model.hidden_channels=8", "model.fc_blocks=1", "model.fc_hidden=8",
    "~callbacks.progress_bar", "callbacks.sample_grid.n=4", "++trainer.enable_model_summary=false",
    "callbacks.sample_score.n=4", "callbacks.sample_score.classifier_steps=5",
]  # fmt: skip
# key -> values users pass, valid ones and invalid ones (wrong range, wrong type, None as null).
SCHEMA: dict[str, list] = {
    "trainer.limit_train_batches": [1, 2, 3, 0.002, 0, -1, 1.5, "many"],
    "trainer.limit_val_batches": [0, 1, 2, 0.001, None, -2],
    "trainer.limit_test_batches": [0, 1, 0.001, None, 3.5],
    "test": [True, False],
    "trainer.max_steps": [1, 2, 5, -1, 0, "ten"],
    "trainer.max_epochs": [1, 2, 0, "abc"],
    "trainer.log_every_n_steps": [1, 50, 0],
    "data.batch_size": [1, 8, 64, 1500, 5000, 0],
    "data.eval_batch_size": [1, 32, 2000, -3],
    "data.num_workers": [0, 2, -1],
    "data.val_size": [0, 100, 500, 4000, -1],
    "trainer.no_such_key": [1],
    "model": ["resflow_small", "nope"],
}
seen: list[tuple[list[str], int]] = []


def _value(value) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


@st.composite
def overrides(draw) -> list[str]:
    keys = draw(st.lists(st.sampled_from(sorted(SCHEMA)), min_size=1, max_size=4, unique=True))
    chosen = [f"{key}={_value(draw(st.sampled_from(SCHEMA[key])))}" for key in keys]
    # Short runs unless the draw sets these itself.
    defaults = {"trainer.limit_train_batches": "2", "trainer.max_epochs": "1", "trainer.limit_val_batches": "1",
                "trainer.limit_test_batches": "1", "data.eval_batch_size": "64"}  # fmt: skip
    return [f"{k}={v}" for k, v in defaults.items() if k not in keys] + chosen


@pytest.mark.slow
@settings(
    max_examples=int(os.environ.get("IRESNET_FUZZ_EXAMPLES", "16")), deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
@given(overrides())
def test_every_combination_exits_cleanly(drawn):
    with tempfile.TemporaryDirectory() as tmp:
        code, stderr = call_main("train", *TINY, *drawn, f"paths.log_dir={tmp}")
    seen.append((drawn, code))
    assert "Traceback" not in stderr, (drawn, stderr[-3000:])
    assert code in (0, 2), (drawn, code, stderr[-3000:])
    if code == 2:
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and stderr.strip().endswith(errors[0]), (drawn, stderr[-3000:])
