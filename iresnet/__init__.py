"""iresnet: invertible residual networks as normalizing flows."""

__version__ = "0.1.0"
