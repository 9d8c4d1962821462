"""2-D toy densities (as in FFJORD / Residual Flows), sampled in torch, within about [-4, 4]^2."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Collate, InMemoryDataModule, RawBatch, Split

Generator = torch.Generator | None


def _shuffled(x: Tensor, labels: Tensor, g: Generator) -> tuple[Tensor, Tensor]:
    """Rows of ``x`` and ``labels`` in one random order, so any prefix mixes all the mixture's parts."""
    order = torch.randperm(len(x), generator=g)
    return x[order], labels[order]


def _moons(n: int, g: Generator) -> tuple[Tensor, Tensor]:
    # sklearn's make_moons(noise=0.1), then FFJORD's rescaling: x * 2 + (-1, -0.2).
    n_outer = n // 2
    outer = torch.linspace(0, math.pi, n_outer)
    inner = torch.linspace(0, math.pi, n - n_outer)
    points = torch.cat(
        [
            torch.stack([outer.cos(), outer.sin()], 1),
            torch.stack([1 - inner.cos(), 0.5 - inner.sin()], 1),
        ]
    )
    points = points + 0.1 * torch.randn(n, 2, generator=g)
    points, labels = _shuffled(points, (torch.arange(n) >= n_outer).long(), g)
    return points * 2 + torch.tensor([-1.0, -0.2]), labels


def _eight_gaussians(n: int, g: Generator) -> tuple[Tensor, Tensor]:
    component = torch.randint(8, (n,), generator=g)
    angles = component * (math.pi / 4)
    centers = 4 * torch.stack([angles.cos(), angles.sin()], 1)
    return (centers + 0.5 * torch.randn(n, 2, generator=g)) / 1.414, component


def _checkerboard(n: int, g: Generator) -> tuple[Tensor, Tensor]:
    x1 = torch.rand(n, generator=g) * 4 - 2
    row = torch.randint(2, (n,), generator=g)
    x2 = torch.rand(n, generator=g) - 2 * row + x1.floor() % 2
    # The square: its column (0..3) and which of the column's two squares.
    return torch.stack([x1, x2], 1) * 2, (x1.floor().long() + 2) * 2 + row


def _pinwheel(n: int, g: Generator) -> tuple[Tensor, Tensor]:
    arm = torch.arange(n) % 5
    radial = torch.randn(n, generator=g) * 0.3 + 1
    tangential = torch.randn(n, generator=g) * 0.1
    angle = arm * (2 * math.pi / 5) + 0.25 * radial.exp()
    cos, sin = angle.cos(), angle.sin()
    points = torch.stack([radial * cos + tangential * sin, tangential * cos - radial * sin], 1)
    points, arm = _shuffled(points, arm, g)
    return 2 * points, arm


def _two_spirals(n: int, g: Generator) -> tuple[Tensor, Tensor]:
    t = torch.rand(n, generator=g).sqrt() * 3 * math.pi  # 540 degrees of arc
    jitter = 0.5 * torch.rand(n, 2, generator=g)
    arm = torch.stack([-t.cos() * t, t.sin() * t], 1) + jitter
    first = torch.arange(n) < (n + 1) // 2
    sign = torch.where(first, 1.0, -1.0)[:, None]
    points = sign * arm / 3 + 0.1 * torch.randn(n, 2, generator=g)
    return _shuffled(points, (~first).long(), g)


# name -> (sampler of (points, component labels), number of components)
TOY_SAMPLERS: dict[str, Callable[[int, Generator], tuple[Tensor, Tensor]]] = {
    "moons": _moons,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
}
TOY_COMPONENTS = {"moons": 2, "8gaussians": 8, "checkerboard": 8, "pinwheel": 5, "2spirals": 2}


def _sampler(name: str) -> Callable[[int, Generator], tuple[Tensor, Tensor]]:
    if name not in TOY_SAMPLERS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {sorted(TOY_SAMPLERS)}")
    return TOY_SAMPLERS[name]


def sample_toy2d(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` float32 points ``(n, 2)`` from the toy density ``name`` (see ``TOY_SAMPLERS``)."""
    return sample_toy2d_components(name, n, generator)[0]


def sample_toy2d_components(name: str, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``n`` float32 points ``(n, 2)`` of the toy density ``name`` and the int64 index ``(n,)`` of
    the mixture component each comes from (``TOY_COMPONENTS[name]`` of them)."""
    if n < 0:
        raise ValueError(f"the number of samples must be >= 0, got {n}")
    points, components = _sampler(name)(n, generator)
    return points.float(), components.long()


def _drop_index(batch: RawBatch) -> tuple[Tensor, Tensor]:
    x, y, _ = batch
    return x, y


class Toy2dDataModule(InMemoryDataModule):
    """Fixed samples of a 2-D toy density: batches ``(x float32 (B, 2), y)``.

    ``y`` is the index of the mixture component each point comes from, int64 ``(B,)``; with
    ``context=True`` it is that index one-hot, float32 ``(B, K)``, the context of a conditional
    flow ``p(x | component)`` (``K = TOY_COMPONENTS[name]``, also ``num_components``).

    Points are continuous, so there is no dequantization (``n_bins = None``). Each split is
    drawn once from its own generator seeded by ``(seed, split)``, so resizing one split does
    not change the others.

    Args:
        name: one of ``TOY_SAMPLERS``.
        num_train, num_val, num_test: split sizes.
        seed: seed of the samples.
        context: serve ``y`` one-hot, as context features.
        batch_size, eval_batch_size, num_workers, drop_last: see ``InMemoryDataModule``.
    """

    dims = (2,)
    n_bins = None

    def __init__(
        self,
        name: str = "8gaussians",
        num_train: int = 10_000,
        num_val: int = 2_000,
        num_test: int = 2_000,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        drop_last: bool = True,
        seed: int = 0,
        context: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, drop_last, seed)
        _sampler(name)  # reject unknown names at construction
        self.name = name
        self.context = context
        self.num_components = TOY_COMPONENTS[name]
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}

    def _build_splits(self) -> dict[str, Split]:
        splits = {}
        for offset, (split, n) in enumerate(self.sizes.items()):
            generator = torch.Generator().manual_seed(3 * self.seed + offset)
            points, components = sample_toy2d_components(self.name, n, generator)
            labels = F.one_hot(components, self.num_components).float() if self.context else components
            splits[split] = Split(points, labels)
        return splits

    def _collate(self, split: str) -> Collate:
        return _drop_index
