"""Thread count of the CPU kernels (results are bit-identical for any count)."""
import numbers

from ._loader import native_library


def set_num_threads(n):
    """Use ``n`` threads in the CPU kernels; ``None`` restores the default (the environment
    variable PADDLE_SSD_OP_NUM_THREADS, else the number of hardware threads)."""
    if n is None:
        n = 0
    elif isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"set_num_threads: expected an int >= 1 or None, received {n!r}")
    native_library().paddle_ssd_op_set_num_threads(int(n))
    try:
        from . import _core
    except ImportError:
        return
    _core.set_num_threads(int(n))


def get_num_threads():
    """Threads the CPU kernels use now."""
    return native_library().paddle_ssd_op_num_threads()
