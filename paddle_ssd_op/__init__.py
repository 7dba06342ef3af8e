"""fluid.layers.ssd_loss as one fused C++ operator for PaddlePaddle 2.6 and 3.3.

Importing the package registers the operator ``fused_ssd_loss`` with Paddle; import it before
loading a saved program or model that contains the op.
"""
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's

from ._loader import load_op as _load_op

_load_op()

from . import cuda  # noqa: E402
from .layers import ssd_loss  # noqa: E402
from .memory import empty_cache  # noqa: E402
from .threads import get_num_threads, set_num_threads  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ssd_loss", "set_num_threads", "get_num_threads", "empty_cache", "cuda"]
