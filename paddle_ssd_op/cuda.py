"""The op's CUDA kernels.

A package built against a Paddle with CUDA holds CUDA kernels for GPU tensors. Until they have
passed ``make test-gpu`` on a real GPU they are opt-in: GPU tensors take a correct host fallback
(copy to the host, run the CPU kernels, copy back) unless PADDLE_SSD_OP_CUDA_KERNELS=1 is set (read
at the op's first call) or :func:`set_kernels_enabled` turns them on. A build without them always
takes the fallback.
"""
from ._loader import native_library


def kernels_built():
    """Whether the operator library holds the CUDA kernels."""
    return bool(native_library().paddle_ssd_op_cuda_kernels_built())


def kernels_enabled():
    """Whether GPU tensors run the CUDA kernels now (False without them)."""
    if not kernels_built():
        return False
    return bool(native_library().paddle_ssd_op_cuda_kernels_enabled())


def set_kernels_enabled(enabled):
    """Run GPU tensors through the CUDA kernels (True) or the host fallback (False), for this
    process; overrides PADDLE_SSD_OP_CUDA_KERNELS. Raises RuntimeError when asked to enable kernels
    the library does not hold."""
    if not isinstance(enabled, bool):
        raise TypeError(f"set_kernels_enabled: expected a bool, received {type(enabled).__name__}")
    if not kernels_built():
        if enabled:
            raise RuntimeError("paddle_ssd_op was built without CUDA kernels (Paddle without CUDA, "
                               "or PADDLE_SSD_OP_CPU_ONLY=1): GPU tensors take the host fallback")
        return
    native_library().paddle_ssd_op_set_cuda_kernels_enabled(int(enabled))
