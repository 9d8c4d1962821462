"""Native (C++) code compiled at first use: a large-block CPU allocator and fused LipSwish loops.

Both are optional speed-ups with PyTorch code beside them: without a C++ compiler, or with
``IRESNET_NATIVE=0``, everything runs as before, only slower and with more memory.
"""

from iresnet.native.allocator import install_large_block_cache, large_block_cache_stats
from iresnet.native.build import load_library

__all__ = ["install_large_block_cache", "large_block_cache_stats", "load_library"]
