"""Constructor argument checks that raise ``ValueError`` naming the value and the fix."""

from __future__ import annotations

from collections.abc import Sequence


def check_int_at_least(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}; pass {name}={low} or more.")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; use one of {tuple(choices)}.")
