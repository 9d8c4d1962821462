"""Operators with no new mathematics: each computes what its plain PyTorch counterpart computes,
faster or in less memory.

:class:`Conv2d` (a convolution whose double backward runs on the first-order kernels) and
:func:`iresnet.ops.lipswish.lipswish` (LipSwish's formula, arranged for cheap products).
Imports torch only.
"""

from iresnet.ops.conv import Conv2d

__all__ = ["Conv2d"]
