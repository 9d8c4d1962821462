"""Activation normalization (Kingma & Dhariwal 2018) with data-dependent initialization."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from iresnet.flows.base import Flow


class ActNorm(Flow):
    """Per-channel affine map ``y = (x + bias) * exp(log_scale)``.

    On the first training batch, ``bias`` and ``log_scale`` are set so that every channel of
    ``y`` has zero mean and unit variance (a batch with one value per channel sets the mean only). Under DDP the statistics are averaged over all ranks
    so every replica starts identical.

    Shapes: ``x: (B, C, H, W)`` or ``x: (B, C)``; ``logdet = H * W * sum(log_scale)``, shape (B,).
    The context is ignored.
    """

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.eps = eps
        # A buffer, not a Python flag, so that checkpoints remember the initialization; the flag
        # records that the buffer was read as set, so that a training step reads it (on the host)
        # once per module, not in every step. Loading a state dict reads it afresh.
        self.register_buffer("initialized", torch.tensor(False))
        self._seen_initialized = False
        self.register_load_state_dict_post_hook(ActNorm._forget_initialized)

    @staticmethod
    def _forget_initialized(module: ActNorm, incompatible_keys: object) -> None:
        module._seen_initialized = False

    def _initialized_once(self) -> bool:
        """The ``initialized`` buffer, read on the host only until it is seen set (a graph break
        under ``torch.compile`` the first time)."""
        if not self._seen_initialized:
            self._seen_initialized = bool(self.initialized)
        return self._seen_initialized

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        mean_sq = (x * x).mean(dim=dims)
        if dist.is_available() and dist.is_initialized():
            stats = torch.stack([mean, mean_sq])
            dist.all_reduce(stats)
            mean, mean_sq = stats / dist.get_world_size()
        std = (mean_sq - mean * mean).clamp_min(0).sqrt()
        self.bias.copy_(-mean)
        # One value per channel (a batch of one flat sample) has no spread to normalize by.
        if x.numel() // x.shape[1] > 1:
            self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.dim() not in (2, 4) or x.shape[1] != self.bias.numel():
            raise ValueError(
                f"ActNorm({self.bias.numel()}) expects (B, {self.bias.numel()}) or "
                f"(B, {self.bias.numel()}, H, W) input, got shape {tuple(x.shape)}."
            )
        if self.training and not self._initialized_once():
            self._initialize(x)
            self._seen_initialized = True
        y = (x + self._view(self.bias, x)) * self._view(self.log_scale, x).exp()
        spatial = x[0, 0].numel()
        logdet = (self.log_scale.sum() * spatial).expand(x.shape[0])
        return y, logdet

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        # A traced inverse (torch.compile, torch.export) is of a model that has run or been loaded.
        if not torch.compiler.is_compiling() and not self._initialized_once():
            raise RuntimeError(
                "ActNorm.inverse called before initialization; run a training-mode forward pass "
                "on a data batch first (or load a trained checkpoint)."
            )
        return y * self._view(-self.log_scale, y).exp() - self._view(self.bias, y)
