"""A small CNN classifier of a dataset's images, trained (seeded) in seconds on a CPU; its
penultimate features serve the Fréchet distance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DatasetClassifier(nn.Module):
    """Two stride-2 3x3 conv layers, a hidden layer of ``features`` units, a linear head.

    Input: images ``(B, C, H, W)`` in ``[0, 1]``. ``features(x)`` is the hidden layer
    ``(B, features)``; ``forward(x)`` the class logits ``(B, num_classes)``. Strides rather than
    pooling: four times fewer full-resolution products, which keeps training under a minute.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int = 32, features: int = 128) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        quarter = ((height + 1) // 2 + 1) // 2 * (((width_px + 1) // 2 + 1) // 2)
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * quarter, features), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x - 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
        """Class probabilities ``(N, num_classes)`` and features ``(N, features)`` of ``x``, in batches."""
        self.eval()
        probs, feats = [], []
        for chunk in x.split(batch_size):
            f = self.features(chunk.to(self.head.weight.device, torch.float32))
            probs.append(self.head(f).softmax(-1).cpu())
            feats.append(f.cpu())
        return torch.cat(probs), torch.cat(feats)


@torch.inference_mode(False)
@torch.enable_grad()
def train_classifier(
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    steps: int = 500,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
) -> DatasetClassifier:
    """A :class:`DatasetClassifier` trained with Adam for ``steps`` batches of ``images (N, C, H, W)``
    in ``[0, 1]``, the order and initialization set by ``seed``. It trains under ``no_grad`` or
    inference mode too (a training run's validation hook calls it there)."""
    # Tensors made in inference mode cannot be saved for backward; copies made outside it can.
    images, labels = images.clone(), labels.clone()
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DatasetClassifier(tuple(images.shape[1:]), num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    order = torch.randperm(len(images), generator=generator)
    position = 0
    for _ in range(steps):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(images), generator=generator), 0
        batch = order[position : position + batch_size]
        position += batch_size
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()
