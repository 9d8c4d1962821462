"""Argument checks, and the datamodules inside a Lightning Trainer."""

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from iresnet.data import Mnist5kDataModule, Toy2dDataModule


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"eval_batch_size": -1}, "eval_batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"n_bits": 0}, "n_bits"),
        ({"n_bits": 9}, "n_bits"),
        ({"val_size": -1}, "val_size"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Mnist5kDataModule(**kwargs)


class _GaussianFit(pl.LightningModule):
    """A diagonal Gaussian fitted by maximum likelihood: enough to drive the dataloaders."""

    def __init__(self, dims):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dims))
        self.log_std = nn.Parameter(torch.zeros(dims))

    def _nll(self, batch):
        x, _ = batch
        return -torch.distributions.Normal(self.mean, self.log_std.exp()).log_prob(x).mean()

    def training_step(self, batch, _):
        return self._nll(batch)

    def validation_step(self, batch, _):
        self.log("val_nll", self._nll(batch))

    def test_step(self, batch, _):
        self.log("test_nll", self._nll(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.1)


@pytest.mark.parametrize(
    "dm",
    [
        Toy2dDataModule(num_train=256, num_val=64, num_test=64, batch_size=32),
        Mnist5kDataModule(batch_size=32, eval_batch_size=200),
    ],
    ids=["toy2d", "mnist5k"],
)
def test_trainer_fit_and_test(dm):
    trainer = pl.Trainer(
        max_steps=5, limit_val_batches=2, limit_test_batches=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu",
    )  # fmt: skip
    model = _GaussianFit(dm.dims)
    trainer.fit(model, datamodule=dm)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert torch.isfinite(torch.tensor(result["test_nll"]))
