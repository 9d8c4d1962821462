"""Training: the LightningModule, the weight average, checkpoint safety, and callbacks."""

from iresnet.training.audit import InvertibilityAudit, InvertibilityWarning
from iresnet.training.callbacks import ReconstructionGrid, SampleGrid, SampleScore
from iresnet.training.checkpoint_io import AtomicCheckpointIO, StepCheckpoint
from iresnet.training.ema import EMA
from iresnet.training.guards import NonFiniteGuard, TrainingDivergedError
from iresnet.training.module import FlowLightningModule

__all__ = [
    "AtomicCheckpointIO",
    "EMA",
    "FlowLightningModule",
    "InvertibilityAudit",
    "InvertibilityWarning",
    "NonFiniteGuard",
    "ReconstructionGrid",
    "SampleGrid",
    "SampleScore",
    "StepCheckpoint",
    "TrainingDivergedError",
]
