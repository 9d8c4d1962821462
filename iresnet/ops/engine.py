"""Which inputs of a custom autograd Function the running backward pass actually needs.

``ctx.needs_input_grad`` only says whether an input requires grad. The log-det estimators run
many backward passes that want the gradient w.r.t. the branch input only, so the layers'
backward functions skip the parameter gradients the engine will not use.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.graph import Node, get_gradient_edge


def gradient_node(t: Tensor) -> Node | None:
    """The autograd node that receives ``t``'s gradient (None if ``t`` needs none)."""
    return get_gradient_edge(t).node if t.requires_grad else None


def engine_will_reach(node: Node | None) -> bool:
    """Whether the running backward pass needs gradients at ``node``.

    True where the engine cannot tell (e.g. a leaf under ``torch.autograd.grad``).
    """
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):
        return True
