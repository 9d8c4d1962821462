"""PNG output of what people look at: image grids, reconstructions, 2-D samples, curves."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import save_image


def _prepare(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_image_grid(images: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """``images: (N, C, H, W)`` in [0, 1] -> a PNG grid with ``nrow`` images per row."""
    nrow = nrow or max(1, int(len(images) ** 0.5))
    path = _prepare(path)
    save_image(images.detach().float().clamp(0, 1).cpu(), path, nrow=nrow, padding=2, pad_value=1.0)
    return path


def save_reconstruction_grid(originals: Tensor, reconstructions: Tensor, path: str | Path) -> Path:
    """Rows alternate originals and their reconstructions: ``(N, C, H, W)`` each."""
    n = len(originals)
    pairs = torch.stack([originals, reconstructions], dim=1).flatten(0, 1)
    # Originals on one row, reconstructions right below, up to 8 per row.
    per_row = min(8, n)
    rows = [pairs[2 * i : 2 * (i + per_row) : 2] for i in range(0, n, per_row)]
    recs = [pairs[2 * i + 1 : 2 * (i + per_row) : 2] for i in range(0, n, per_row)]
    ordered = torch.cat([t for pair in zip(rows, recs) for t in pair])
    return save_image_grid(ordered, path, nrow=per_row)


def save_points_plot(points: Tensor, path: str | Path, title: str = "", reference: Tensor | None = None) -> Path:
    """Scatter plot of 2-D ``points: (N, 2)``, optionally over ``reference`` data in grey."""
    path = _prepare(path)
    # A bare Figure renders to PNG without pyplot, so importing iresnet never switches the
    # backend of a notebook or GUI session.
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    if reference is not None:
        ref = reference.detach().cpu()
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="lightgrey", label="data")
    pts = points.detach().cpu()
    ax.scatter(pts[:, 0], pts[:, 1], s=2, c="tab:blue", label="model")
    ax.set_aspect("equal")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def save_curves(curves: dict[str, tuple[list[float], list[float]]], path: str | Path, xlabel: str, ylabel: str) -> Path:
    """Line plot of named ``(x, y)`` curves."""
    path = _prepare(path)
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for name, (xs, ys) in curves.items():
        ax.plot(xs, ys, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
