"""Speed-ups with no new mathematics: custom autograd functions and C++ operators.

Each computes what its plain PyTorch counterpart computes, faster or in less memory:
:class:`Conv2d` (a convolution whose double backward runs on the first-order kernels), LipSwish's
stored-slope autograd with its loops as ``torch.ops.iresnet`` operators (:mod:`.lipswish`, built
by ``torch.utils.cpp_extension`` at first use), and the helpers they share. Imports torch only.
"""

from iresnet.ops.conv import Conv2d
from iresnet.ops.extension import load_extension

__all__ = ["Conv2d", "load_extension"]
