"""The error raised when a dataset's files are not where we looked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing; the message lists every place searched and how to fix it.

    Subclasses ``FileNotFoundError`` so generic "missing file" handlers still catch it.
    """

    def __init__(
        self,
        dataset: str,
        looked_in: Sequence[str | Path],
        expected: str,
        fixes: Sequence[str],
    ) -> None:
        self.dataset = dataset
        self.looked_in = [str(p) for p in looked_in]
        places = "\n".join(f"  - {p}" for p in self.looked_in)
        remedies = "\n".join(f"  - {f}" for f in fixes)
        super().__init__(
            f"{dataset} not found. Looked for {expected} in:\n{places}\nTo fix:\n{remedies}"
        )
