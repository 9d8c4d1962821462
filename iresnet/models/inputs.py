"""What a :class:`~iresnet.models.FlowModel` takes, checked once at its door with the fix in the message.

A model knows (when it was told or can tell) the shape of ``x`` (``input_shape``), of its codes
``z`` (the prior's event shape) and the kind of context its context networks read: class labels
``(B,)`` for an ``nn.Embedding``, features ``(B, K)`` for an ``nn.Linear`` of ``K`` inputs. The
checks read shapes, dtypes and devices only, except the range of class labels (one read back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from iresnet.lipschitz import ContextShift, needs_context


@dataclass(frozen=True)
class ContextSpec:
    """The context a model reads: ``"labels"``, integers ``(B,)`` in ``[0, size)``, or
    ``"features"``, floats ``(B, size)``."""

    kind: str
    size: int

    @property
    def noun(self) -> str:
        return "labels" if self.kind == "labels" else "features"

    def __str__(self) -> str:
        if self.kind == "labels":
            return f"class labels, integers of shape (B,) in [0, {self.size - 1}]"
        return f"features, floats of shape (B, {self.size})"


def context_spec(flow: nn.Module, prior: nn.Module) -> ContextSpec | None:
    """The context read by the first ``nn.Embedding`` or ``nn.Linear`` of ``flow``'s context
    networks (those of its :class:`~iresnet.lipschitz.ContextShift` layers) or of a prior that
    needs a context; None if there is none to read it from."""
    readers = [m.context_net for m in flow.modules() if isinstance(m, ContextShift)]
    readers += [prior] if needs_context(prior) else []
    for reader in readers:
        for module in reader.modules():
            if isinstance(module, nn.Embedding):
                return ContextSpec("labels", module.num_embeddings)
            if isinstance(module, nn.Linear):
                return ContextSpec("features", module.in_features)
    return None


def prior_event_shape(prior: nn.Module) -> tuple[int, ...] | None:
    """The event shape of ``prior``'s distribution: called without a context if it needs none,
    else ``(prior.dim,)`` where it says its dimension; None when it cannot be told."""
    if not needs_context(prior):
        distribution = prior()
        return tuple(distribution.event_shape) if isinstance(distribution, Distribution) else None
    dim = getattr(prior, "dim", None)
    return (int(dim),) if isinstance(dim, int) else None


def check_prior(input_shape: tuple[int, ...] | None, event_shape: tuple[int, ...] | None) -> None:
    """A flow is a bijection: a code holds as many values as ``x``, so the prior's event must too."""
    if input_shape is None or event_shape is None or math.prod(event_shape) == math.prod(input_shape):
        return
    raise ValueError(
        f"the prior's event shape {event_shape} holds {math.prod(event_shape)} values, but the flow maps x of shape "
        f"{input_shape} to codes of {math.prod(input_shape)}: build the prior for dim={math.prod(input_shape)} "
        "(a per-dimension distribution wrapped in torch.distributions.Independent(..., 1))."
    )


def _shape(shape: tuple[int, ...]) -> str:
    return f"(B, {', '.join(map(str, shape))})" if shape else "(B,)"


def check_tensor(
    name: str, t: object, shape: tuple[int, ...] | None, device: torch.device, dtype: torch.dtype, fix: str
) -> None:
    """``t`` is a floating-point tensor ``(B, *shape)`` on ``device`` (``shape`` None: any)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {_shape(shape or ())}, got {type(t).__name__}: pass torch.as_tensor({name}).")
    if t.dim() == 0 or (shape is not None and tuple(t.shape[1:]) != shape):
        raise ValueError(
            f"the model takes {name} of shape {_shape(shape or ())}, got {tuple(t.shape)}: {fix}."
        )
    if not t.is_floating_point():
        raise TypeError(f"{name} has dtype {t.dtype}; the model takes floating-point values: pass {name}.to({dtype}).")
    if t.device != device:
        raise ValueError(
            f"{name} is on {t.device} but the model is on {device}: move one to the other, "
            f"{name}.to({str(device)!r}) or model.to({str(t.device)!r})."
        )


def check_context(
    context: object, rows: int, conditional: bool, spec: ContextSpec | None, device: torch.device, dtype: torch.dtype
) -> None:
    """``context`` is None for an unconditional model, and for a conditional one what ``spec``
    says, one row per sample, on ``device``."""
    if not conditional:
        if context is not None:
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(
                f"this model is unconditional and takes no context, got one ({shape}): drop the context "
                "argument, or build a conditional model (e.g. ResidualFlow(num_classes=...), ToyFlow(context_features=...))."
            )
        return
    wanted = str(spec) if spec is not None else "a tensor with one row per sample"
    if context is None:
        noun = spec.noun if spec is not None else "context"
        raise ValueError(
            f"this model is conditional: pass the {noun} as the context ({wanted}), e.g. model.log_prob(x, {noun})."
        )
    if not isinstance(context, Tensor):
        raise TypeError(f"the context must be a torch.Tensor, {wanted}; got {type(context).__name__}.")
    if context.dim() == 0 or len(context) != rows:
        raise ValueError(f"the context has shape {tuple(context.shape)} for a batch of {rows}: give one row per sample, {wanted}.")
    if context.device != device:
        raise ValueError(
            f"the context is on {context.device} but the model is on {device}: pass context.to({str(device)!r})."
        )
    if spec is None:
        return
    if spec.kind == "labels":
        if context.dim() != 1 or context.is_floating_point() or context.dtype == torch.bool:
            raise ValueError(
                f"the context must be {wanted}; got {context.dtype} of shape {tuple(context.shape)}: "
                "pass the labels as a (B,) integer tensor, labels.long()."
            )
        if context.numel() and (context.min() < 0 or context.max() >= spec.size):
            raise ValueError(
                f"class labels must lie in [0, {spec.size - 1}], got values in [{int(context.min())}, "
                f"{int(context.max())}]: the model was built for {spec.size} classes."
            )
    elif context.dim() != 2 or context.shape[1] != spec.size:
        raise ValueError(
            f"the context must be {wanted}; got shape {tuple(context.shape)}: give {spec.size} features per sample."
        )
    elif context.dtype != dtype:
        raise TypeError(f"the context has dtype {context.dtype} but the model computes in {dtype}: pass context.to({dtype}).")
