"""The operator's cache of output buffers.

Paddle's CPU allocator returns large blocks to the OS when they are freed, so the op keeps the
buffers of its large outputs (gradients, saved state; 1 MiB and more) and reuses one once no tensor
refers to it any more: training steps of the same shapes then run without page faults. At most
PADDLE_SSD_OP_CACHE_MB MiB (default 1024; 0 turns the cache off) are cached. Paddle 2.6 does not
expose the allocations of tensors, so there the op does not cache.
"""
from ._loader import native_library


def empty_cache():
    """Free the cached output buffers that no tensor uses any more (like
    ``paddle.device.cuda.empty_cache`` for the GPU allocator)."""
    native_library().paddle_ssd_op_empty_cache()
