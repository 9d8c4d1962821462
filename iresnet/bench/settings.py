"""What a benchmark run measures and how much: the full, quick and smoke profiles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SECTIONS = ("train", "memory", "eval", "inversion", "logdet", "spectral", "ddp", "full")
DEFAULT_SECTIONS = SECTIONS[:-1]  # the full protocol trains for epochs: only on request
# Gradient modes of the memory curve (as in PowerSeriesLogDet): (grad, memory_efficient).
MEMORY_MODES = {
    "backprop": ("backprop", False),
    "neumann": ("neumann", False),
    "backprop_memory_efficient": ("backprop", True),
    "neumann_memory_efficient": ("neumann", True),
}


@dataclass(frozen=True)
class Settings:
    """Sizes and options of every section; ``None`` keeps the protocol's value.

    ``overrides`` are Hydra overrides of the ``mnist5k_bench`` experiment applied wherever the
    model is built or trained. Train variants are ``roulette`` (the protocol's estimator) or
    ``series-N`` (N-term power series with backpropagation).
    """

    sections: tuple[str, ...] = DEFAULT_SECTIONS
    device: str = "cpu"
    threads: int | None = None  # torch threads here and per training process (None: torch's default)
    seed: int = 0
    overrides: tuple[str, ...] = ()
    ckpt: str | None = None
    # train: throughput and peak memory of the train command, one process per variant
    train_variants: tuple[str, ...] = ("roulette", "series-5", "series-10", "series-20")
    batch_size: int | None = None
    warmup_steps: int = 2
    timed_steps: int = 6
    # memory: peak memory of a forward + backward versus the number of series terms
    memory_modes: tuple[str, ...] = tuple(MEMORY_MODES)
    memory_terms: tuple[int, ...] = (2, 5, 10, 20)
    memory_batch: int = 16
    # eval: the EMA model on the test images, then a high-accuracy estimate of the first ones
    eval_images: int = 1000
    eval_terms: int | None = None
    eval_probes: int | None = None
    eval_chunk: int | None = None
    high_accuracy_images: int = 64
    high_accuracy_terms: int = 60
    high_accuracy_probes: int = 4
    # inversion: to a max-abs image-space error, per solver and coeff
    invert_images: int = 64
    invert_tol: float = 1e-5
    invert_coeffs: tuple[float, ...] = (0.9, 0.98)
    # logdet: estimator bias and spread against the exact value
    logdet_coeffs: tuple[float, ...] = (0.5, 0.9, 0.98)
    logdet_series_terms: tuple[int, ...] = (1, 2, 5, 10, 20)
    logdet_roulette_exact: tuple[int, ...] = (1, 2, 5)
    logdet_draws: int = 50
    logdet_samples: int = 64
    # spectral: power-iteration accuracy
    spectral_tol: float = 1e-4
    spectral_trials: int = 5
    # ddp: throughput of 1 and 2 processes on CPU
    ddp_processes: tuple[int, ...] = (1, 2)
    # full: train for this many epochs with the train command, test, invert
    epochs: int = 5

    def replace(self, **changes) -> Settings:
        """A copy with ``changes``; ``None`` values are ignored (the option was not given)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


QUICK = dict(
    train_variants=("roulette",), batch_size=16, warmup_steps=1, timed_steps=2,
    memory_modes=("backprop", "neumann_memory_efficient"), memory_terms=(2, 10), memory_batch=8,
    eval_images=32, high_accuracy_images=8, high_accuracy_terms=40, high_accuracy_probes=2, invert_images=8,
    logdet_series_terms=(2, 20), logdet_roulette_exact=(2,), logdet_draws=5, logdet_samples=16,
    spectral_trials=2, epochs=1,
)  # fmt: skip
# A tiny model, batches and epochs: each section in seconds, for the test suite.
SMOKE = dict(
    QUICK,
    overrides=(
        "model.n_blocks=[1,1,1]", "model.hidden_channels=32", "model.fc_blocks=1", "model.fc_hidden=16",
        "trainer.limit_train_batches=4", "trainer.limit_test_batches=1",
    ),
    batch_size=8, memory_terms=(2, 20), eval_images=16, high_accuracy_images=4, high_accuracy_terms=30,
    invert_images=4, logdet_coeffs=(0.5, 0.98), logdet_draws=3, logdet_samples=8, spectral_trials=1,
)  # fmt: skip


def profile(quick: bool, smoke: bool) -> Settings:
    """The default settings, or those of ``--quick`` or ``--quick --smoke``."""
    if smoke:
        return Settings(**SMOKE)
    return Settings(**QUICK) if quick else Settings()
