"""The reference implementation's figures, printed beside ours: read from a JSON file, never kept in code.

Figures belong to the machine that measured them, so they live in files: the repository's
``docs/reference/residual-flows-mnist5k-cpu.json`` holds those of its 2-core CPU, and
``scripts/compare_reference.py`` measures both implementations side by side on any machine.
"""

from __future__ import annotations

import json
from pathlib import Path

# The keys the report reads; any of them may be missing (shown as "–").
KEYS = (
    "source", "machine", "batch_size", "threads", "train_images_per_s", "peak_rss_mib", "eval_seconds_1000_images",
    "invert_64_images_seconds", "invert_64_images_max_abs_error", "epochs", "steps", "test_bpd_raw", "test_bpd_ema",
    "inversion_raw_max_abs_error",
)  # fmt: skip


def load_reference(path: str | Path | None) -> dict:
    """The JSON object of figures in ``path`` (the ``bench`` config's ``reference``); ``{}`` for None.

    ``FileNotFoundError`` or ``ValueError`` naming the setting for a missing file, a file that is not
    JSON, or JSON that is not an object, or one whose keys are none of :data:`KEYS` (a misspelled
    or foreign file would otherwise print empty reference rows).
    """
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"reference={str(path)!r}: no such file; pass a JSON file of the reference's figures "
            "(e.g. docs/reference/residual-flows-mnist5k-cpu.json), or reference=null for none."
        )
    try:
        figures = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"reference={str(path)!r} is not JSON ({err}); pass a JSON object of figures.") from None
    if not isinstance(figures, dict):
        raise ValueError(f"reference={str(path)!r} holds a JSON {type(figures).__name__}, not an object of figures.")
    if not set(figures) & set(KEYS):
        raise ValueError(
            f"reference={str(path)!r} names none of the reference's figures ({', '.join(sorted(figures)) or 'none'}); "
            f"expected keys such as {', '.join(KEYS[4:8])}."
        )
    return figures
