"""Training: the LightningModule, the weight average, and callbacks that write grids."""

from iresnet.training.callbacks import ReconstructionGrid, SampleGrid
from iresnet.training.ema import EMA
from iresnet.training.module import FlowLightningModule

__all__ = ["EMA", "FlowLightningModule", "ReconstructionGrid", "SampleGrid"]
