"""Thread count of the CPU kernels (results are bit-identical for any count). The op and _core
share one core library (libssd_loss_core.so), hence one thread pool and one count."""
import numbers

from . import _core

MAX_THREADS = _core.MAX_THREADS


def set_num_threads(n):
    """Use ``n`` threads (1 to 1024) in the CPU kernels; ``None`` restores the default (the
    environment variable PADDLE_SSD_OP_NUM_THREADS, else the number of hardware threads, at most
    1024). Lowering the count ends the threads kept beyond it."""
    if n is None:
        n = 0
    elif isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: expected an int in [1, {MAX_THREADS}] or None, "
                        f"received {type(n).__name__} {n!r}")
    elif not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: expected an int in [1, {MAX_THREADS}] or None, "
                         f"received {n!r}")
    _core.set_num_threads(int(n))


def get_num_threads():
    """Threads the CPU kernels use now."""
    return _core.num_threads()
