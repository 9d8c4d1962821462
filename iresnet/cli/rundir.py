"""Keeping a run directory whole across kills and resumes: its CSV log and its checkpoint folder.

A run killed at any moment and resumed with ``resume=true`` continues in its own directory.
Lightning's CSV logger starts a fresh ``metrics.csv`` (and reads the old one's header, which
breaks when the keys differ), so before a resumed run creates its loggers the log so far is set
aside as ``metrics_until_step_<N>.csv``, cut at the checkpoint's step ``N`` (rows after it are
redone). When the run finishes, the pieces are joined back into one ``metrics.csv``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

LOG = "metrics.csv"
_PIECE = re.compile(r"metrics_until_step_(\d+)\.csv")
_TEMPORARY = re.compile(r"\.[^/]+\.ckpt\.(\d+)\.tmp")


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _write(path: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    """Writes the CSV to a temporary file and renames it over ``path`` (never half a log)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def set_log_aside(log_dir: Path, step: int) -> None:
    """Moves ``log_dir/metrics.csv`` to ``metrics_until_step_<step>.csv``, keeping rows before ``step``.

    Call before the resumed run's CSV logger exists. Rows at or after ``step`` were logged after
    the checkpoint the run resumes from; the resumed run logs them again.
    """
    log = log_dir / LOG
    if not log.is_file():
        return
    fields, rows = _read(log)
    _write(log_dir / f"metrics_until_step_{step}.csv", fields, [r for r in rows if _step(r) < step])
    log.unlink()


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


def join_log(log_dir: Path) -> Path | None:
    """Joins the pieces set aside by resumes and the last ``metrics.csv`` into one ``metrics.csv``
    (in step order, with the union of their columns), and removes the pieces.

    Piece ``until_step_N`` holds the rows before step ``N`` of the attempt that ended there; the
    next piece starts at ``N``.
    """
    pieces = sorted(
        ((int(m.group(1)), p) for p in log_dir.glob("metrics_until_step_*.csv") if (m := _PIECE.fullmatch(p.name))),
    )  # fmt: skip
    if not pieces:
        return None
    fields: list[str] = []
    rows: list[dict[str, str]] = []
    start = 0
    for end, path in pieces + ([(None, log_dir / LOG)] if (log_dir / LOG).is_file() else []):
        names, piece = _read(path)
        fields += [name for name in names if name not in fields]
        rows += [r for r in piece if _step(r) >= start and (end is None or _step(r) < end)]
        start = end if end is not None else start
    _write(log_dir / LOG, fields, rows)
    for _, path in pieces:
        path.unlink()
    return log_dir / LOG


def remove_stale_temporary_files(checkpoint_dir: Path) -> list[Path]:
    """Removes ``.<name>.ckpt.<pid>.tmp`` files of processes that no longer run (a kill during a
    checkpoint write leaves one); returns them."""
    removed = []
    for path in checkpoint_dir.glob(".*.ckpt.*.tmp") if checkpoint_dir.is_dir() else ():
        match = _TEMPORARY.fullmatch(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
