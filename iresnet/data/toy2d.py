"""2-D toy densities (as in FFJORD / Residual Flows), sampled in torch, within about [-4, 4]^2."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .base import Collate, InMemoryDataModule, RawBatch, Split

Generator = torch.Generator | None


def _shuffled(x: Tensor, g: Generator) -> Tensor:
    """Rows of ``x`` in random order, so any prefix mixes all the mixture's parts."""
    return x[torch.randperm(len(x), generator=g)]


def _moons(n: int, g: Generator) -> Tensor:
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
    return _shuffled(points, g) * 2 + torch.tensor([-1.0, -0.2])


def _eight_gaussians(n: int, g: Generator) -> Tensor:
    angles = torch.randint(8, (n,), generator=g) * (math.pi / 4)
    centers = 4 * torch.stack([angles.cos(), angles.sin()], 1)
    return (centers + 0.5 * torch.randn(n, 2, generator=g)) / 1.414


def _checkerboard(n: int, g: Generator) -> Tensor:
    x1 = torch.rand(n, generator=g) * 4 - 2
    x2 = torch.rand(n, generator=g) - 2 * torch.randint(2, (n,), generator=g) + x1.floor() % 2
    return torch.stack([x1, x2], 1) * 2


def _pinwheel(n: int, g: Generator) -> Tensor:
    arm = torch.arange(n) % 5
    radial = torch.randn(n, generator=g) * 0.3 + 1
    tangential = torch.randn(n, generator=g) * 0.1
    angle = arm * (2 * math.pi / 5) + 0.25 * radial.exp()
    cos, sin = angle.cos(), angle.sin()
    points = torch.stack([radial * cos + tangential * sin, tangential * cos - radial * sin], 1)
    return 2 * _shuffled(points, g)


def _two_spirals(n: int, g: Generator) -> Tensor:
    t = torch.rand(n, generator=g).sqrt() * 3 * math.pi  # 540 degrees of arc
    jitter = 0.5 * torch.rand(n, 2, generator=g)
    arm = torch.stack([-t.cos() * t, t.sin() * t], 1) + jitter
    sign = torch.where(torch.arange(n) < (n + 1) // 2, 1.0, -1.0)[:, None]
    points = sign * arm / 3 + 0.1 * torch.randn(n, 2, generator=g)
    return _shuffled(points, g)


TOY_SAMPLERS: dict[str, Callable[[int, Generator], Tensor]] = {
    "moons": _moons,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
}


def _sampler(name: str) -> Callable[[int, Generator], Tensor]:
    if name not in TOY_SAMPLERS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {sorted(TOY_SAMPLERS)}")
    return TOY_SAMPLERS[name]


def sample_toy2d(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` float32 points ``(n, 2)`` from the toy density ``name`` (see ``TOY_SAMPLERS``)."""
    if n < 0:
        raise ValueError(f"the number of samples must be >= 0, got {n}")
    return _sampler(name)(n, generator).float()


def _drop_index(batch: RawBatch) -> tuple[Tensor, Tensor]:
    x, y, _ = batch
    return x, y


class Toy2dDataModule(InMemoryDataModule):
    """Fixed samples of a 2-D toy density: batches ``(x float32 (B, 2), y zeros int64 (B,))``.

    Points are continuous, so there is no dequantization (``n_bins = None``). Each split is
    drawn once from its own generator seeded by ``(seed, split)``, so resizing one split does
    not change the others.

    Args:
        name: one of ``TOY_SAMPLERS``.
        num_train, num_val, num_test: split sizes.
        seed: seed of the samples.
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
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, drop_last)
        _sampler(name)  # reject unknown names at construction
        self.name = name
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.seed = seed

    def _build_splits(self) -> dict[str, Split]:
        splits = {}
        for offset, (split, n) in enumerate(self.sizes.items()):
            generator = torch.Generator().manual_seed(3 * self.seed + offset)
            points = sample_toy2d(self.name, n, generator)
            splits[split] = Split(points, torch.zeros(n, dtype=torch.long))
        return splits

    def _collate(self, split: str) -> Collate:
        return _drop_index
